// Live refresh for pages of running searches: every `data-refresh` seconds the page is fetched
// again and each `[data-live]` region is swapped for its fresh copy, so plots, counts and the
// table follow the search without a reload (scroll position and the URL stay). It stops when
// the fresh page no longer asks for a refresh (the search ended).
(function () {
  "use strict";
  function seconds(doc) {
    return Number(doc.body.getAttribute("data-refresh") || 0);
  }
  function schedule() {
    var every = seconds(document);
    if (every > 0) setTimeout(refresh, every * 1000);
  }
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (replacement) region.replaceWith(document.importNode(replacement, true));
        });
        var every = seconds(fresh);
        if (every > 0) document.body.setAttribute("data-refresh", String(every));
        else document.body.removeAttribute("data-refresh");
        var stamp = document.getElementById("refreshed");
        if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (error) {
        var stamp = document.getElementById("refreshed");
        if (stamp) stamp.textContent = "refresh failed (" + error.message + "); retrying";
      })
      .then(schedule);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", schedule);
  else schedule();
})();
