// Private support conversations (客服在线).
// - A conversation page (#support-thread): chat.js runs the chat and hands this script the frames
//   it does not know ("chat:frame" events): "thread" (where the conversation stands, newest
//   version wins) and "agents" (whether an agent is online).
// - The agents' queue (#support-queue): one WebSocket in the room support-queue; each "thread"
//   frame updates one row (closed ones leave), and after every (re)connect the list is read again
//   from /api/support/threads, since changes made while away sent no frame to this page.
// Text reaches the page only through textContent: names and messages are data, not markup.
(function () {
  "use strict";

  var SUBPROTOCOL = "mservices.chat.v1";
  var CLOSE_SESSION_ENDED = 4001;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;

  function statuses(element) {
    try {
      return JSON.parse(element.dataset.statuses || "{}");
    } catch (error) {
      return {};
    }
  }

  // -- a conversation ---------------------------------------------------------------------------

  function conversation(bar) {
    var chat = document.getElementById("chat");
    var labels = statuses(bar);
    var state = document.getElementById("support-state");
    var agents = document.getElementById("support-agents");
    var closed = document.getElementById("support-closed");
    var closeForm = document.getElementById("support-close");
    var version = parseInt(bar.dataset.version || "0", 10);

    function showThread(thread) {
      if (typeof thread.version !== "number" || thread.version < version) {
        return; // an older copy, overtaken on its way
      }
      version = thread.version;
      bar.dataset.status = thread.status;
      state.textContent = labels[thread.status] || thread.status;
      state.className = "support-status support-status-" + thread.status;
      if (thread.status === "closed") {
        closed.hidden = false;
        if (closeForm) {
          closeForm.hidden = true;
        }
        document.getElementById("chat-input").disabled = true;
        document.querySelector("#chat-form button").disabled = true;
      }
    }

    function showAgents(online) {
      if (!agents) {
        return;
      }
      agents.dataset.online = online ? "true" : "false";
      agents.textContent = online
        ? _("A support agent is online")
        : _("No agent is online right now: leave a message and we will answer");
    }

    chat.addEventListener("chat:frame", function (event) {
      var frame = event.detail;
      if (frame.type === "thread" && frame.thread) {
        showThread(frame.thread);
      } else if (frame.type === "agents") {
        showAgents(frame.online === true);
      }
    });
  }

  // -- the queue --------------------------------------------------------------------------------

  function queue(root) {
    var labels = statuses(root);
    var room = root.dataset.room;
    var body = document.getElementById("support-threads");
    var empty = document.getElementById("support-empty");
    var count = document.getElementById("support-count");
    var status = document.getElementById("chat-status");
    var online = document.getElementById("support-agents-online");
    var agents = [];
    var attempt = 0;
    var stopped = false;

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text;
    }

    function clock(iso) {
      return new Date(iso).toLocaleTimeString(document.documentElement.lang || [], {
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
      });
    }

    function cell(row, text) {
      var td = document.createElement("td");
      if (text instanceof Node) {
        td.appendChild(text);
      } else {
        td.textContent = text;
      }
      row.appendChild(td);
    }

    function rowOf(thread) {
      var row = document.createElement("tr");
      row.dataset.threadId = String(thread.id);
      row.dataset.version = String(thread.version);
      row.dataset.status = thread.status;
      row.dataset.updated = thread.updated_at;
      var link = document.createElement("a");
      link.href = "/support/" + thread.id;
      link.textContent = "#" + thread.id;
      cell(row, link);
      cell(row, thread.customer);
      var badge = document.createElement("span");
      badge.className = "support-status support-status-" + thread.status;
      badge.textContent = labels[thread.status] || thread.status;
      cell(row, badge);
      var last = thread.last_message;
      cell(row, last ? last.user + ": " + last.text : "");
      var time = document.createElement("time");
      time.dateTime = thread.updated_at;
      time.textContent = clock(thread.updated_at);
      cell(row, time);
      return row;
    }

    // Waiting for an agent (new, waiting) first, then answered; longest waiting first.
    function rank(row) {
      return row.dataset.status === "answered" ? 1 : 0;
    }

    function before(a, b) {
      if (rank(a) !== rank(b)) {
        return rank(a) < rank(b);
      }
      return new Date(a.dataset.updated) < new Date(b.dataset.updated);
    }

    function counted() {
      count.textContent = String(body.children.length);
      empty.hidden = body.children.length > 0;
    }

    function place(row) {
      var next = body.firstElementChild;
      while (next && before(next, row)) {
        next = next.nextElementSibling;
      }
      body.insertBefore(row, next);
    }

    function update(thread) {
      var current = body.querySelector('tr[data-thread-id="' + thread.id + '"]');
      if (current && parseInt(current.dataset.version, 10) > thread.version) {
        return; // an older copy, overtaken on its way
      }
      if (current) {
        body.removeChild(current);
      }
      if (thread.status !== "closed" && thread.last_message) {
        place(rowOf(thread));
      }
      counted();
    }

    function reload() {
      fetch("/api/support/threads", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (!data) {
            return;
          }
          var fresh = {};
          data.items.forEach(function (thread) {
            fresh[String(thread.id)] = true;
            update(thread);
          });
          Array.prototype.slice.call(body.children).forEach(function (row) {
            if (!fresh[row.dataset.threadId]) {
              body.removeChild(row);
            }
          });
          counted();
        })
        .catch(function () {
          return null; // the next reconnect reads it again
        });
    }

    function showAgents() {
      online.textContent = agents.join(", ");
    }

    function handle(frame) {
      switch (frame.type) {
        case "history":
          attempt = 0;
          break;
        case "presence":
          agents = frame.users.slice().sort();
          showAgents();
          reload(); // after every (re)connect, and after a Redis resync
          break;
        case "join":
          if (agents.indexOf(frame.user) < 0) {
            agents = agents.concat([frame.user]).sort();
            showAgents();
          }
          break;
        case "leave":
          agents = agents.filter(function (user) { return user !== frame.user; });
          showAgents();
          break;
        case "thread":
          update(frame.thread);
          break;
        default:
          break;
      }
    }

    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var url = scheme + location.host + "/message?room=" + encodeURIComponent(room);
      setStatus("connecting", attempt > 0 ? _("Reconnecting…") : _("Connecting…"));
      var ws = new WebSocket(url, [SUBPROTOCOL]);
      var opened = false;
      ws.onopen = function () {
        opened = true;
        setStatus("open", _("Connected"));
      };
      ws.onmessage = function (event) {
        if (typeof event.data !== "string") {
          return;
        }
        try {
          handle(JSON.parse(event.data));
        } catch (error) {
          return; // an unreadable frame changes nothing here
        }
      };
      ws.onclose = function (event) {
        if (event.code === CLOSE_SESSION_ENDED || (!opened && attempt > 3)) {
          stopped = true;
          setStatus("stopped", _("Disconnected; reload the page to see the queue again"));
          return;
        }
        if (stopped) {
          return;
        }
        attempt += 1;
        var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt - 1));
        var delay = ceiling / 2 + Math.random() * (ceiling / 2);
        var seconds = Math.ceil(delay / 1000);
        setStatus("closed", _("Disconnected; reconnecting in {seconds} s", { seconds: seconds }));
        window.setTimeout(connect, delay);
      };
    }

    counted();
    connect();
  }

  var bar = document.getElementById("support-thread");
  if (bar) {
    conversation(bar);
  }
  var root = document.getElementById("support-queue");
  if (root) {
    queue(root);
  }
})();
