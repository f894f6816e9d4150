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
          throw new Error(REASONS[data.code] || data.msg || "请求失败（" + response.status + "）");
        }
        return data;
      });
    });
  }

  // Why a download stopped or was refused, in words, by the stable error code.
  var REASONS = {
    cancelled: "文件未保存",
    too_large: "文件超过大小上限，已停止",
    forbidden_address: "不能下载内网或本机地址",
    invalid_url: "网址无效",
    invalid_scheme: "只能下载 http:// 或 https:// 网址",
    unresolvable_host: "域名无法解析",
    upstream_timeout: "对方服务器太久没有响应，已超时",
    upstream_error: "对方服务器返回错误或无法连接",
    too_many_redirects: "重定向次数太多",
    disk_cap: "服务器的下载空间已满",
    write_failed: "保存文件失败",
    shutting_down: "服务器正在关闭，下载已停止",
    too_many_downloads: "正在进行的下载太多，请稍后再试",
    user_concurrency_cap: "你同时进行的下载已达上限",
    user_daily_cap: "你今天的下载次数已达上限",
    internal_error: "下载出错",
  };
  var STATES = { queued: "排队中", running: "下载中", done: "已完成", failed: "失败", cancelled: "已取消" };
  var samples = {}; // id -> {bytes, at, speed}: speed is measured between polls

  function reason(code, upstreamStatus) {
    var text = REASONS[code] || "下载失败";
    if (code === "upstream_error" && upstreamStatus) {
      text += "（HTTP " + upstreamStatus + "）";
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
      return seconds + " 秒";
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return minutes + " 分 " + (seconds % 60) + " 秒";
    }
    return Math.floor(minutes / 60) + " 小时 " + (minutes % 60) + " 分";
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
          parts.push("剩余约 " + duration((item.total - item.bytes) / speed));
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
    var stateCell = cell(row, STATES[item.state] || item.state);
    stateCell.className = "download-state";
    if (item.state === "failed" || item.state === "cancelled") {
      var why = document.createElement("span");
      why.className = "download-reason";
      var code = item.state === "cancelled" && !item.error_code ? "cancelled" : item.error_code;
      why.textContent = "：" + reason(code, item.upstream_status);
      stateCell.appendChild(why);
    }
    var actions = cell(row, "");
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = active ? "取消" : "移除";
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
