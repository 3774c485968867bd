// Light and dark themes: the system's preference (prefers-color-scheme) unless
// the toggle chose one, which is kept in localStorage (applied before the first
// paint by theme-init.js).

const KEY = "roster.dashboard.theme";

export function initTheme(button, onChange) {
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  const root = document.documentElement;
  const current = () => root.getAttribute("data-theme") || (media.matches ? "dark" : "light");

  const sync = () => {
    const dark = current() === "dark";
    button.setAttribute("aria-pressed", dark ? "true" : "false");
    button.textContent = "Dark theme";
    button.title = dark ? "Switch to the light theme" : "Switch to the dark theme";
    root.dataset.effectiveTheme = dark ? "dark" : "light";
  };

  button.addEventListener("click", () => {
    const next = current() === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try {
      localStorage.setItem(KEY, next);
    } catch {
      /* storage disabled: the choice lasts for this page */
    }
    sync();
    onChange(next);
  });
  media.addEventListener("change", () => {
    if (!root.getAttribute("data-theme")) {
      sync();
      onChange(current());
    }
  });
  sync();
  return { current };
}
