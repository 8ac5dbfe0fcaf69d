// postpub console: live updates over server-sent events, and "select all". Pages work
// without it; everything shown comes in as text (textContent), never as HTML.
"use strict";
(function () {
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="id"]').forEach(function (c) { c.checked = all.checked; });
    });
  }
  var status = document.getElementById("live-status");
  if (!status || !window.EventSource) { return; }
  var list = document.getElementById("live");
  var source = new EventSource("/console/live");
  source.onopen = function () {
    status.textContent = "Live updates: connected.";
    status.setAttribute("data-live", "on");
  };
  source.onerror = function () {
    status.textContent = "Live updates: reconnecting…";
    status.setAttribute("data-live", "off");
  };
  source.addEventListener("update", function (ev) {
    var d = JSON.parse(ev.data);
    var at = new Date().toLocaleTimeString();
    d.items.forEach(function (it) {
      if (typeof it.version_id === "number") {
        document.querySelectorAll('[data-version-state="' + it.version_id + '"]').forEach(function (cell) {
          cell.textContent = it.state;
          cell.className = "state s-" + it.state;
        });
      }
      if (list) {
        var li = document.createElement("li");
        var what = typeof it.version_id === "number" ? " #" + it.version_id : " to " + it.sink;
        li.textContent = at + " " + it.document + what + ": " + it.state;
        li.className = "s-" + it.state;
        list.insertBefore(li, list.firstChild);
        while (list.children.length > 30) { list.removeChild(list.lastChild); }
      }
    });
    status.textContent = "Live updates: connected, last change at " + at +
      (d.more > 0 ? " (" + d.more + " more not listed)" : "") + ".";
  });
})();
