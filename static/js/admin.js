// Admin pages: small enhancements only; every form works the same without this file.
// Never build markup from data here: text goes through textContent or dataset, never innerHTML.
(function () {
  "use strict";

  // Ask before a destructive form (data-confirm holds the question, already plain text).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) {
      return;
    }
    var question = form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Flag a form with unsaved edits, so its save button stands out.
  document.addEventListener("input", function (event) {
    var field = event.target;
    var form = field && field.form;
    if (form && form.method === "post" && !form.dataset.confirm) {
      form.classList.add("is-dirty");
    }
  });

  // The menu tree: Escape inside a node's opened forms closes them and returns to its "Edit"
  // button (the summary); a form shown again after a refusal is scrolled into view.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || !(event.target instanceof Element)) {
      return;
    }
    var details = event.target.closest("details.node-more[open]");
    if (details) {
      details.open = false;
      details.querySelector("summary").focus();
    }
  });
  var refused = document.querySelector("form.is-refused");
  if (refused) {
    refused.scrollIntoView({ block: "center" });
  }

  // A role's checklist: buttons to check or clear every menu at once.
  document.querySelectorAll("form.checklist fieldset").forEach(function (fieldset) {
    var boxes = fieldset.querySelectorAll('input[type="checkbox"]');
    if (boxes.length < 2) {
      return;
    }
    var tools = document.createElement("div");
    tools.className = "checklist-tools";
    [[_("Check all"), true], [_("Check none"), false]].forEach(function (choice) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = choice[0];
      button.addEventListener("click", function () {
        boxes.forEach(function (box) {
          box.checked = choice[1];
        });
        fieldset.form.classList.add("is-dirty");
      });
      tools.appendChild(button);
    });
    fieldset.insertBefore(tools, fieldset.querySelector("legend").nextSibling);
  });
})();
