// Keeps the approval list current without a reload.
//
// Polling, not server-sent events: decisions and new requests land in the
// approval store's SQLite file from other processes too (the CLI, `stockade
// mcp`, another server), so the server would have to poll the database to
// feed a stream anyway. A poll a second per open tab is one indexed query;
// it holds no connection open (a long-lived stream would keep a shutdown
// waiting for its grace period) and needs no reconnect logic across restarts.
//
// The server renders the list (autoescaped); this script only moves whole
// cards: new ones are inserted, decided ones removed, the ones still pending
// kept as they are, so a note or an edit being typed is never lost.
"use strict";

(function () {
  const root = document.getElementById("approvals");
  if (!root) {
    return;
  }
  const url = root.dataset.cardsUrl;
  const pollMs = Number(root.dataset.pollMs) || 1000;
  let skew = 0; // the server's clock minus this browser's, in seconds

  function readClock(cards) {
    skew = Number(cards.dataset.now) - Date.now() / 1000;
  }

  function duration(seconds) {
    const whole = Math.max(0, Math.floor(seconds));
    const hours = Math.floor(whole / 3600);
    const minutes = Math.floor((whole % 3600) / 60);
    const secs = whole % 60;
    if (hours) {
      return hours + " h " + minutes + " min";
    }
    if (minutes) {
      return minutes + " min " + secs + " s";
    }
    return secs + " s";
  }

  function tick() {
    const now = Date.now() / 1000 + skew;
    for (const card of document.querySelectorAll("#cards > .card")) {
      card.querySelector(".waited").textContent = duration(now - Number(card.dataset.created));
      const expires = card.querySelector(".expires");
      expires.textContent = duration(Number(expires.dataset.expires) - now);
    }
  }

  function merge(fresh) {
    const current = document.getElementById("cards");
    const kept = new Map();
    for (const card of current.querySelectorAll(":scope > .card")) {
      kept.set(card.dataset.id, card);
    }
    const wanted = new Set();
    for (const card of fresh.querySelectorAll(":scope > .card")) {
      wanted.add(card.dataset.id);
    }
    for (const [id, card] of kept) {
      if (!wanted.has(id)) {
        card.remove();
      }
    }
    // In the server's order, moving a kept card only when it is out of place
    // (moving a node takes the focus away from whatever is typed in it).
    let cursor = current.querySelector(":scope > .card");
    for (const card of fresh.querySelectorAll(":scope > .card")) {
      const node = kept.get(card.dataset.id) || document.importNode(card, true);
      if (node === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        current.insertBefore(node, cursor);
      }
    }
    const count = fresh.querySelector("#count").textContent;
    document.getElementById("count").textContent = count;
    document.getElementById("empty").hidden = fresh.querySelector("#empty").hidden;
    document.title = "(" + wanted.size + ") Stockade approvals";
    readClock(fresh);
    tick();
  }

  readClock(document.getElementById("cards"));
  window.setInterval(tick, 1000);
  window.stockadePoll(url, "cards", pollMs, merge, () => true);
})();
