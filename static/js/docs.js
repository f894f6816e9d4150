// "Try it out" on /docs: each operation's form sends its request from this page, same origin,
// with the bearer token typed at the top and no cookies (credentials: "omit"), so the session
// cookie never rides along and the API's XSRF rule does not apply. Answers are shown as text.
(function () {
  "use strict";

  function buildUrl(form) {
    var path = form.dataset.path;
    var query = new URLSearchParams();
    var missing = [];
    form.querySelectorAll("input[data-in]").forEach(function (input) {
      var value = input.value;
      if (input.dataset.in === "path") {
        if (value === "") { missing.push(input.dataset.name); }
        path = path.replace("{" + input.dataset.name + "}", encodeURIComponent(value));
      } else if (input.dataset.in === "query" && value !== "") {
        query.append(input.dataset.name, value);
      }
    });
    var search = query.toString();
    return { url: path + (search ? "?" + search : ""), missing: missing };
  }

  function show(form, status, text) {
    var line = form.querySelector(".try-status");
    var result = form.querySelector(".try-result");
    line.textContent = status;
    line.hidden = false;
    result.textContent = text;
    result.hidden = text === "";
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (error) { return text; }
  }

  function send(form, tokenField) {
    var built = buildUrl(form);
    if (built.missing.length) {
      show(form, _("Fill in the path parameters: {names}", { names: built.missing.join(", ") }), "");
      return;
    }
    var headers = { "Accept": "application/json" };
    var token = tokenField.value.trim();
    if (token) { headers["Authorization"] = "Bearer " + token; }
    var init = { method: form.dataset.method, headers: headers, credentials: "omit" };
    var body = form.querySelector("textarea[data-body]");
    if (body) {
      headers["Content-Type"] = "application/json";
      init.body = body.value;
    }
    show(form, _("Sending…"), "");
    fetch(built.url, init).then(function (response) {
      return response.text().then(function (text) {
        show(form, response.status + " " + response.statusText + " · " + form.dataset.method + " " + built.url, pretty(text));
        if (response.ok && form.dataset.path === "/user/login") {
          try {
            var answer = JSON.parse(text);
            if (answer && typeof answer.token === "string") { tokenField.value = answer.token; }
          } catch (error) { /* not JSON: leave the token as it is */ }
        }
      });
    }).catch(function (error) {
      show(form, _("Request failed: {error}", { error: error.message }), "");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tokenField = document.getElementById("docs-token");
    document.querySelectorAll("form.try-it").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        send(form, tokenField);
      });
    });
  });
})();
