// Keyboard shortcuts for the choice (1/A, 2/B, 3/T; Enter saves) and the dashboard's quiet reload.
// Everything works without this file: it only saves clicks.
(function () {
  "use strict";
  var body = document.body;
  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && el.type !== "radio" && el.type !== "checkbox");
  }
  if (body.dataset.keys === "choice") {
    var keys = { "1": "A", "a": "A", "2": "B", "b": "B", "3": "tie", "t": "tie" };
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
      var choice = keys[ev.key.toLowerCase()];
      if (choice) {
        var input = document.getElementById("choice-" + choice);
        if (input) { input.checked = true; input.focus(); ev.preventDefault(); }
      } else if (ev.key === "Enter" && !/^(A|BUTTON|SUMMARY)$/.test(ev.target.tagName)) {
        var form = document.getElementById("answer");
        if (form) { ev.preventDefault(); form.requestSubmit(); }
      }
    });
  }
  var every = parseInt(body.dataset.refresh || "0", 10);
  if (every > 0) {
    setInterval(function () {
      var el = document.activeElement;
      if (!typing(el) && !document.getElementById("new-link")) window.location.reload();
    }, every * 1000);
  }
})();
