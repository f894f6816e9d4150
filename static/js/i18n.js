// The page's language for scripts: _("English source") returns its translation, which the
// server placed in <script id="script-texts"> (ids listed by `make messages`), with {name}
// placeholders filled from the second argument. An id without a translation reads as itself.
(function () {
  "use strict";

  var texts = {};
  var element = document.getElementById("script-texts");
  if (element) {
    try {
      texts = JSON.parse(element.textContent || "{}");
    } catch (error) {
      texts = {};
    }
  }

  window._ = function (message, params) {
    var text = Object.prototype.hasOwnProperty.call(texts, message) ? texts[message] : message;
    if (!params) {
      return text;
    }
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole;
    });
  };
})();
