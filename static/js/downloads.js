// The downloads page: start a download, then poll GET /api/downloads and show progress bars.
// Text from the server only ever goes through textContent or attributes, never innerHTML.
(function () {
  "use strict";

  var section = document.getElementById("downloads");
  var form = document.getElementById("download-form");
  var rows = document.getElementById("download-rows");
  var empty = document.getElementById("download-empty");
  var problem = document.getElementById("download-error");
  var api = section.dataset.api;
  var POLL_MS = 1000;

  function xsrfToken() {
    var field = form.querySelector('input[name="_xsrf"]');
    return field ? field.value : "";
  }

  function call(method, path, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": xsrfToken(), "Accept": "application/json" },
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      if (response.status === 204) {
        return null;
      }
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new Error(data.msg || "request failed (" + response.status + ")");
        }
        return data;
      });
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function render(item) {
    var row = document.createElement("tr");
    row.dataset.state = item.state;
    var name = cell(row, "");
    if (item.file_url) {
      var link = document.createElement("a");
      link.href = item.file_url;
      link.textContent = item.filename;
      name.appendChild(link);
    } else {
      name.textContent = item.filename;
    }
    var progressCell = cell(row, "");
    var bar = document.createElement("progress");
    bar.max = item.total || 1;
    if (item.total || item.state === "done") {
      bar.value = item.state === "done" ? bar.max : item.bytes;
    }
    progressCell.appendChild(bar);
    var size = document.createElement("span");
    size.className = "muted";
    size.textContent = " " + item.bytes + (item.total ? " / " + item.total : "") + " bytes";
    progressCell.appendChild(size);
    cell(row, item.error ? item.state + ": " + item.error : item.state);
    var actions = cell(row, "");
    var button = document.createElement("button");
    button.type = "button";
    var active = item.state === "queued" || item.state === "running";
    button.textContent = active ? "Cancel" : "Remove";
    button.addEventListener("click", function () {
      call("DELETE", api + "/" + encodeURIComponent(item.id)).then(refresh, showProblem);
    });
    actions.appendChild(button);
    return row;
  }

  function refresh() {
    return call("GET", api).then(function (data) {
      rows.replaceChildren.apply(rows, data.items.map(render));
      empty.hidden = data.items.length > 0;
    }, showProblem);
  }

  function showProblem(error) {
    problem.textContent = error.message;
    problem.hidden = false;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    problem.hidden = true;
    var body = { url: form.elements.url.value };
    if (form.elements.filename.value) {
      body.filename = form.elements.filename.value;
    }
    call("POST", api, body).then(function () {
      form.elements.url.value = "";
      form.elements.filename.value = "";
      return refresh();
    }, showProblem);
  });

  refresh();
  window.setInterval(refresh, POLL_MS);
})();
