// Keeps a run's timeline current while the run is under way, without a reload.
//
// Polling a server-rendered fragment, as the approvals page does (see
// approvals.js for why polling): the server renders every item (autoescaped,
// control sequences removed); this script only moves whole items. An item is
// replaced only when its version changed (a call that finished, an approval
// decided), new items are appended, and nothing else is touched: what the
// reader scrolled to, opened or selected stays as it was. Polling stops once
// the run has ended.
"use strict";

(function () {
  const root = document.getElementById("run");
  if (!root) {
    return;
  }
  const url = root.dataset.timelineUrl;
  const pollMs = Number(root.dataset.pollMs) || 1000;

  function merge(fresh) {
    const current = document.getElementById("timeline");
    current.querySelector("#run-summary").replaceWith(
      document.importNode(fresh.querySelector("#run-summary"), true),
    );
    const list = current.querySelector("#items");
    const kept = new Map();
    for (const item of list.querySelectorAll(":scope > .item")) {
      kept.set(item.dataset.key, item);
    }
    let cursor = list.firstElementChild;
    for (const item of fresh.querySelectorAll("#items > .item")) {
      const old = kept.get(item.dataset.key);
      let node = old;
      if (!old) {
        node = document.importNode(item, true);
        list.insertBefore(node, cursor);
      } else if (old.dataset.version !== item.dataset.version) {
        node = document.importNode(item, true);
        old.replaceWith(node);
        if (cursor === old) {
          cursor = node;
        }
      } else if (old !== cursor) {
        list.insertBefore(old, cursor);
      }
      cursor = node.nextElementSibling;
    }
    const empty = document.getElementById("no-items");
    if (empty && fresh.querySelector("#items > .item")) {
      empty.remove();
    }
    current.dataset.live = fresh.dataset.live;
    current.dataset.status = fresh.dataset.status;
  }

  window.stockadePoll(
    url,
    "timeline",
    pollMs,
    merge,
    () => document.getElementById("timeline").dataset.live === "true",
  );
})();
