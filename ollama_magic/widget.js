// The chat widget's keyboard shortcut, run once per widget (__CLASS__ is its own class).
(function () {
  // Shift+Enter or Ctrl/Cmd+Enter in the message box presses Send; Enter alone is a newline.
  // The listener sits on the widget's root in the capture phase, so it runs before the
  // textarea's own handler (which stops every key from reaching JupyterLab's shortcuts).
  var cls = "__CLASS__";
  function attach(root) {
    if (root.getAttribute("data-om-keys")) return;
    root.setAttribute("data-om-keys", "1");
    root.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || !(event.shiftKey || event.ctrlKey || event.metaKey)) return;
      var box = event.target;
      if (!box || box.tagName !== "TEXTAREA" || !box.closest(".om-input")) return;
      event.preventDefault();
      event.stopPropagation();
      // The box syncs on change (continuous_update=False): sync it, then press Send.
      box.dispatchEvent(new Event("change", { bubbles: true }));
      var send = root.querySelector("button.om-send");
      if (send) send.click();
    }, true);
  }
  var tries = 0;
  (function look() {
    var roots = document.querySelectorAll("." + cls);
    for (var i = 0; i < roots.length; i++) attach(roots[i]);
    if (tries++ < 100) setTimeout(look, roots.length ? 1000 : 100);
  })();
})();
