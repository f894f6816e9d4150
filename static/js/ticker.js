// The ticker page: shows each frame of the /ticker WebSocket as a line of text (textContent only),
// as the seed sends it; only the page's status line is in the page's language.
(function () {
  "use strict";

  var root = document.getElementById("ticker");
  if (!root) {
    return;
  }
  var lines = document.getElementById("ticker-lines");
  var status = document.getElementById("ticker-status");
  var again = document.getElementById("ticker-again");

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function run() {
    lines.replaceChildren();
    again.hidden = true;
    setStatus("connecting", _("Connecting…"));
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + (root.dataset.path || "/ticker"));
    socket.onopen = function () {
      setStatus("open", _("Connected"));
    };
    socket.onmessage = function (event) {
      var item = document.createElement("li");
      item.textContent = String(event.data);
      lines.appendChild(item);
    };
    socket.onclose = function (event) {
      setStatus("closed", event.code === 1000 ? _("Finished") : _("Disconnected"));
      again.hidden = false;
    };
  }

  again.addEventListener("click", run);
  run();
})();
