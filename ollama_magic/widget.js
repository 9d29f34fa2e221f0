// The chat widget's keyboard and click handling, run once per widget (__CLASS__ is its class).
(function () {
  var cls = "__CLASS__";
  // Lumino skips its shortcuts for a key whose target, or an ancestor of it, has this
  // attribute (CommandRegistry.processKeydownEvent). Notebook 7 handles its shortcuts at the
  // document before the widget sees the key, so without it Shift+Enter in a box runs the cell
  // again (and a new, empty widget replaces the chat). Only the text fields get it: elsewhere
  // in the widget the notebook's keys work as usual, as in JupyterLab.
  function keepShortcutsAway(element) {
    if (element && (element.tagName === "TEXTAREA" || element.tagName === "INPUT")) {
      element.setAttribute("data-lm-suppress-shortcuts", "true");
    }
  }
  function attach(root) {
    if (root.getAttribute("data-om-keys")) return;
    root.setAttribute("data-om-keys", "1");
    root.querySelectorAll("textarea, input").forEach(keepShortcutsAway);
    // A field drawn later, or redrawn, gets it when it takes the focus: before any key.
    root.addEventListener("focusin", function (event) {
      keepShortcutsAway(event.target);
    }, true);
    // Shift+Enter or Ctrl/Cmd+Enter in the message box presses Send; Enter alone is a newline.
    // The listener sits on the widget's root in the capture phase, so it runs before the
    // textarea's own handler (which stops every key from reaching JupyterLab's shortcuts).
    root.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || !(event.shiftKey || event.ctrlKey || event.metaKey)) return;
      var box = event.target;
      if (!box || box.tagName !== "TEXTAREA" || !box.closest(".om-input")) return;
      event.preventDefault();
      event.stopPropagation();
      var send = root.querySelector("button.om-send");
      if (send) send.click(); // the click listener below syncs the box first
    }, true);
    // Send sends what the box shows. The box syncs on change (continuous_update=False), and
    // a click does not always make one: Safari, and Firefox on macOS, leave the focus in the
    // box, so it never blurs. So every click on Send (mouse, keyboard, or the shortcut above)
    // first tells the kernel what the box holds; in the capture phase this runs before the
    // button's own handler, so the value reaches the kernel before the click does.
    root.addEventListener("click", function (event) {
      var target = event.target;
      if (!target || !target.closest || !target.closest("button.om-send")) return;
      var box = root.querySelector(".om-input textarea");
      if (box) box.dispatchEvent(new Event("change", { bubbles: true }));
    }, true);
  }
  var tries = 0;
  (function look() {
    var roots = document.querySelectorAll("." + cls);
    for (var i = 0; i < roots.length; i++) attach(roots[i]);
    if (tries++ < 100) setTimeout(look, roots.length ? 1000 : 100);
  })();
})();
