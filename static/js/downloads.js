// The downloads page: start a download, then poll GET /api/downloads and show progress bars.
// Text from the server only ever goes through textContent or attributes, never innerHTML; the
// page's own words go through _() (static/js/i18n.js), in the page's language.
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
          throw new Error(
            REASONS[data.code] || data.msg || _("Request failed ({status})", { status: response.status })
          );
        }
        return data;
      });
    });
  }

  // Why a download stopped or was refused, in words, by the stable error code (a code not
  // listed here shows the server's own reason, which it words in the page's language too).
  var REASONS = {
    cancelled: _("The file was not saved"),
    too_large: _("The file is over the size limit; stopped"),
    forbidden_address: _("Internal and local addresses cannot be downloaded"),
    invalid_url: _("The URL is not valid"),
    invalid_scheme: _("Only http:// and https:// URLs can be downloaded"),
    unresolvable_host: _("The host name does not resolve"),
    upstream_timeout: _("The other server took too long to answer; timed out"),
    upstream_error: _("The other server answered an error or could not be reached"),
    too_many_redirects: _("Too many redirects"),
    disk_cap: _("The server's download space is full"),
    write_failed: _("Saving the file failed"),
    shutting_down: _("The server is shutting down; the download was stopped"),
    too_many_downloads: _("Too many downloads are running; please try again later"),
    user_concurrency_cap: _("You have reached your limit of downloads at once"),
    user_daily_cap: _("You have reached your download limit for today"),
    internal_error: _("The download went wrong"),
  };
  var STATES = {
    queued: _("Queued"),
    running: _("Downloading"),
    done: _("Done"),
    failed: _("Failed"),
    cancelled: _("Cancelled"),
  };
  var samples = {}; // id -> {bytes, at, speed}: speed is measured between polls

  function reason(code, upstreamStatus, serverReason) {
    var text = REASONS[code] || serverReason || _("The download failed");
    if (code === "upstream_error" && upstreamStatus) {
      text = _("{reason} (HTTP {status})", { reason: text, status: upstreamStatus });
    }
    return text;
  }

  function size(bytes) {
    var units = ["KB", "MB", "GB", "TB"];
    if (bytes < 1024) {
      return bytes + " B";
    }
    var value = bytes / 1024;
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return value.toFixed(1) + " " + units[unit];
  }

  function duration(seconds) {
    seconds = Math.max(1, Math.round(seconds));
    if (seconds < 60) {
      return _("{seconds} s", { seconds: seconds });
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return _("{minutes} min {seconds} s", { minutes: minutes, seconds: seconds % 60 });
    }
    return _("{hours} h {minutes} min", { hours: Math.floor(minutes / 60), minutes: minutes % 60 });
  }

  // Bytes a second, smoothed over the polls that saw this download running.
  function measure(item) {
    var now = Date.now();
    var last = samples[item.id];
    var speed = last ? last.speed : null;
    if (last && now > last.at && item.bytes >= last.bytes) {
      var current = ((item.bytes - last.bytes) * 1000) / (now - last.at);
      speed = speed === null ? current : speed * 0.6 + current * 0.4;
    }
    samples[item.id] = { bytes: item.bytes, at: now, speed: speed };
    return speed;
  }

  function progressText(item) {
    var parts = [size(item.bytes) + (item.total ? " / " + size(item.total) : "")];
    if (item.total) {
      parts.push((Math.min(100, (item.bytes * 100) / item.total)).toFixed(1) + "%");
    }
    if (item.state === "running") {
      var speed = measure(item);
      if (speed !== null) {
        parts.push(size(Math.round(speed)) + "/s");
        if (item.total && speed > 0) {
          parts.push(_("about {time} left", { time: duration((item.total - item.bytes) / speed) }));
        }
      }
    } else {
      delete samples[item.id];
    }
    return parts.join(" · ");
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
    var active = item.state === "queued" || item.state === "running";
    var progressCell = cell(row, "");
    var bar = document.createElement("progress");
    bar.className = "download-bar";
    if (active) {
      bar.max = item.total || 1;
      if (item.total) {
        bar.value = item.bytes; // without a size the bar stays indeterminate: still running
      }
    } else {
      // A finished row always has a value: an indeterminate bar animates as if still running.
      bar.max = item.total || Math.max(item.bytes, 1);
      bar.value = item.state === "done" ? bar.max : Math.min(item.bytes, bar.max);
    }
    progressCell.appendChild(bar);
    var amount = document.createElement("span");
    amount.className = "muted download-amount";
    amount.textContent = " " + progressText(item);
    progressCell.appendChild(amount);
    var state = STATES[item.state] || item.state;
    if (item.state === "failed" || item.state === "cancelled") {
      var code = item.state === "cancelled" && !item.error_code ? "cancelled" : item.error_code;
      var why = reason(code, item.upstream_status, item.error);
      state = _("{state}: {reason}", { state: state, reason: why });
    }
    var stateCell = cell(row, state);
    stateCell.className = "download-state";
    var actions = cell(row, "");
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = active ? _("Cancel") : _("Remove");
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
