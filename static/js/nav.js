// The phone layout's menu button: it opens and closes the sidebar (#site-menu) as a drawer.
// Loaded in <head> without defer, so the html.js class is set before the first paint and the
// drawer never flashes open; without JavaScript the button stays hidden and the CSS shows the
// sidebar stacked under the header instead.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  function setOpen(button, drawer, open) {
    button.setAttribute("aria-expanded", open ? "true" : "false");
    drawer.classList.toggle("is-open", open);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.querySelector("button.nav-toggle");
    var drawer = button && document.getElementById(button.getAttribute("aria-controls"));
    if (!button || !drawer) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      setOpen(button, drawer, button.getAttribute("aria-expanded") !== "true");
    });
    // Escape closes an open drawer and gives the focus back to its button.
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && button.getAttribute("aria-expanded") === "true") {
        setOpen(button, drawer, false);
        button.focus();
      }
    });
  });
})();
