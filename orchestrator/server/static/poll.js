// Polls a server-rendered fragment of the page: what approvals.js and runs.js share.
//
// The server renders the fragment (autoescaped, control sequences removed);
// the page's own script merges it in. A 401 sends the browser to sign in; any
// other failure shows the page's #offline notice until a poll succeeds again.
"use strict";

// Start polling `url` every `pollMs` for the element `fragment`, handing each
// fresh copy to `merge`, for as long as `goOn()` says so (asked before each poll).
window.stockadePoll = function (url, fragment, pollMs, merge, goOn) {
  const offline = document.getElementById("offline");

  async function refresh() {
    try {
      const answer = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      if (answer.status === 401) {
        window.location.assign("/ui/sign-in");
        return;
      }
      if (!answer.ok) {
        throw new Error("status " + answer.status);
      }
      // DOMParser runs no script and loads nothing; the page's CSP allows no inline script.
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = doc.getElementById(fragment);
      if (fresh) {
        merge(fresh);
      }
      offline.hidden = true;
    } catch (error) {
      offline.hidden = false;
    }
    if (goOn()) {
      window.setTimeout(refresh, pollMs);
    }
  }

  if (goOn()) {
    window.setTimeout(refresh, pollMs);
  }
};
