() => {
  // Installed once per page by build_ui's load event. Injects the page CSS and the rating shortcuts:
  //   1-5 quick scores, s skip, u undo, Enter submit the slider score, g open/close the guidelines;
  //   on the Compare tab (pairwise mode) 1-4 A better / B better / tie / both bad, s skip, u undo.
  // A key clicks the first of its buttons that is visible (the other tab's are hidden) and enabled.
  // Keys are ignored while typing in an input, textarea, select or contenteditable element, and with modifiers.
  if (window.__rlhfLiveBooted) return;
  window.__rlhfLiveBooted = true;
  const css = __CSS__;
  const style = document.createElement("style");
  style.id = "rlhf-live-style";
  style.textContent = css;
  document.head.appendChild(style);

  const keys = {
    "1": ["q1", "cmp-1"], "2": ["q2", "cmp-2"], "3": ["q3", "cmp-3"], "4": ["q4", "cmp-4"], "5": ["q5"],
    s: ["skip-btn", "cmp-skip"], u: ["undo-btn", "cmp-undo"], Enter: ["submit-btn"],
  };
  const typing = (el) => {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    const tag = el.tagName;
    if (tag === "INPUT" && el.type === "range") return false; // the score slider: keys still work
    if (tag === "TEXTAREA" || tag === "INPUT") return !(el.readOnly || el.disabled);
    return tag === "SELECT";
  };
  const visible = (el) => !!el && el.offsetParent !== null;
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat || typing(ev.target)) return;
    if (ev.key === "g") {
      const toggle = document.querySelector("#guidelines button, #guidelines .label-wrap");
      if (visible(toggle)) { toggle.click(); ev.preventDefault(); }
      return;
    }
    const btn = (keys[ev.key] || []).map((id) => document.getElementById(id)).find(visible);
    if (!btn || btn.disabled) return;
    ev.preventDefault();
    btn.click();
  });
}
