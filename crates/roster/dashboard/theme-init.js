// Applies the theme before the first paint: the one chosen with the toggle
// (localStorage), else the system's (prefers-color-scheme). A classic script, not
// inline, so that it runs under a CSP without 'unsafe-inline' for scripts.
(function () {
  var root = document.documentElement;
  var t = null;
  try {
    t = localStorage.getItem("roster.dashboard.theme");
  } catch (e) {
    /* storage disabled: follow the system */
  }
  if (t === "light" || t === "dark") root.setAttribute("data-theme", t);
  else t = window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  // What app.css reads; js/theme.js keeps it current (toggle, system change).
  root.setAttribute("data-effective-theme", t);
})();
