// Applies the theme chosen with the toggle (localStorage) before the first paint;
// without a choice, the CSS follows prefers-color-scheme. A classic script, not
// inline, so that it runs under a CSP without 'unsafe-inline' for scripts.
(function () {
  try {
    var t = localStorage.getItem("roster.dashboard.theme");
    if (t === "light" || t === "dark") document.documentElement.setAttribute("data-theme", t);
  } catch (e) {
    /* storage disabled: follow the system */
  }
})();
