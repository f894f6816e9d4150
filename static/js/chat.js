// The chat room: one WebSocket to /message, resumed after every disconnect, except when the
// server says the session ended (4001), the client broke the rules (1008) or the handshake is
// refused because the session is gone: then the page stops and says why.
// Text reaches the page only through textContent, never innerHTML: a message is data, not markup.
// The page's own sentences go through _() (i18n.js) in the page's language; the server's error
// frames arrive already in the reader's language.
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) {
    return;
  }
  var room = root.dataset.room || "lobby";
  var me = root.dataset.me || "";
  var maxChars = parseInt(root.dataset.maxChars || "2000", 10);
  var list = document.getElementById("chat-messages");
  var online = document.getElementById("chat-online");
  var onlineCount = document.getElementById("chat-online-count");
  var status = document.getElementById("chat-status");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");

  var MAX_LINES = 500;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;

  var SUBPROTOCOL = "mservices.chat.v1";
  var CLOSE_SESSION_ENDED = 4001;
  var CLOSE_POLICY = 1008;

  var socket = null;
  var stopped = false; // the server said no: nothing reconnects until the page is reloaded
  var attempt = 0;
  var timer = null;
  var lastId = null; // the greatest message id seen, as exact decimal text
  var seen = new Set(); // ids of the messages on the page
  var users = [];

  // Message ids are 63-bit integers, past the 53 bits a JavaScript number holds exactly, so they
  // are kept as their decimal text: JSON.parse's source text where the browser offers it, else
  // the digits read from the frame itself (a key `"id"` can only follow `{` or `,` outside a
  // string: inside one, a quote is always escaped).
  function parseFrame(text) {
    var digits = null;
    var next = 0;
    return JSON.parse(text, function (key, value, context) {
      if (key !== "id" || typeof value !== "number") {
        return value;
      }
      if (context && typeof context.source === "string") {
        return context.source;
      }
      if (digits === null) {
        digits = [];
        var pattern = /[{,]\s*"id"\s*:\s*(\d+)/g;
        var match;
        while ((match = pattern.exec(text)) !== null) {
          digits.push(match[1]);
        }
      }
      var exact = digits[next];
      next += 1;
      return exact !== undefined ? exact : String(value);
    });
  }

  // Compare two ids given as decimal text without leading zeros.
  function newer(a, b) {
    return a.length !== b.length ? a.length > b.length : a > b;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function clock(ts) {
    var when = new Date(ts * 1000);
    return when.toLocaleTimeString(document.documentElement.lang || [], {
      hour: "2-digit",
      minute: "2-digit",
    });
  }

  function nearBottom() {
    return list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  }

  function trim() {
    while (list.children.length > MAX_LINES) {
      var first = list.firstElementChild;
      if (first.dataset.id) {
        seen.delete(first.dataset.id);
      }
      list.removeChild(first);
    }
  }

  function place(item, id) {
    var stick = nearBottom();
    // Keep messages in id order: a live message can arrive before the history holding older ones.
    var after = list.lastElementChild;
    if (id !== null) {
      while (after && after.dataset.id && newer(after.dataset.id, id)) {
        after = after.previousElementSibling;
      }
    }
    list.insertBefore(item, after ? after.nextSibling : list.firstChild);
    trim();
    if (stick) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function notice(text, level) {
    var item = document.createElement("li");
    item.className = "chat-notice" + (level ? " chat-notice-" + level : "");
    item.textContent = text;
    place(item, null);
  }

  function addMessage(message) {
    var id = String(message.id);
    if (seen.has(id)) {
      return;
    }
    seen.add(id);
    if (lastId === null || newer(id, lastId)) {
      lastId = id;
    }
    var item = document.createElement("li");
    item.className = "chat-message" + (message.user === me ? " mine" : "");
    item.dataset.id = id;
    var time = document.createElement("time");
    time.dateTime = new Date(message.ts * 1000).toISOString();
    time.textContent = clock(message.ts);
    var who = document.createElement("span");
    who.className = "chat-user";
    who.textContent = message.user;
    var text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = message.text;
    item.appendChild(time);
    item.appendChild(who);
    if (message.staff === true) {
      // Said by support staff in a support conversation (客服).
      item.className += " staff";
      var badge = document.createElement("span");
      badge.className = "chat-badge";
      badge.textContent = _("Staff");
      item.appendChild(badge);
    }
    item.appendChild(text);
    place(item, id);
  }

  function showOnline() {
    online.replaceChildren();
    users.forEach(function (user) {
      var item = document.createElement("li");
      item.textContent = user;
      if (user === me) {
        item.className = "me";
      }
      online.appendChild(item);
    });
    onlineCount.textContent = String(users.length);
  }

  function setUsers(names) {
    users = names.slice().sort();
    showOnline();
  }

  function handle(frame) {
    switch (frame.type) {
      case "history":
        frame.messages.forEach(addMessage);
        if (!frame.recovered) {
          notice(_("Disconnected for too long: some messages could not be recovered"), "warn");
        } else if (attempt > 0) {
          notice(_("Reconnected"), null);
        }
        attempt = 0;
        break;
      case "presence":
        setUsers(frame.users);
        break;
      case "join":
        if (users.indexOf(frame.user) < 0) {
          setUsers(users.concat([frame.user]));
        }
        if (frame.user !== me) {
          notice(_("{user} joined the chat room", { user: frame.user }), null);
        }
        break;
      case "leave":
        setUsers(users.filter(function (user) { return user !== frame.user; }));
        notice(_("{user} left the chat room", { user: frame.user }), null);
        break;
      case "message":
        addMessage(frame);
        break;
      case "error":
        notice(frame.text || _("Something went wrong"), "error");
        break;
      default:
        // Frames of a private room (a support conversation's "thread" and "agents") are for
        // the page's own script (support.js).
        root.dispatchEvent(new CustomEvent("chat:frame", { detail: frame }));
        break;
    }
  }

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + "/message?room=" + encodeURIComponent(room);
    if (lastId !== null) {
      url += "&last_id=" + lastId;
    }
    return url;
  }

  function connect() {
    timer = null;
    setStatus("connecting", attempt > 0 ? _("Reconnecting…") : _("Connecting…"));
    // JSON frames: without this subprotocol the server speaks the seed's plain-text lines.
    var ws = new WebSocket(socketUrl(), [SUBPROTOCOL]);
    socket = ws;
    var opened = false;
    ws.onopen = function () {
      opened = true;
      setStatus("open", _("Connected"));
    };
    ws.onmessage = function (event) {
      if (ws !== socket || typeof event.data !== "string") {
        return;
      }
      try {
        handle(parseFrame(event.data));
      } catch (error) {
        notice(_("Received a message that could not be read"), "error");
      }
    };
    ws.onclose = function (event) {
      if (ws !== socket) {
        return;
      }
      socket = null;
      if (event.code === CLOSE_SESSION_ENDED) {
        sessionEnded();
      } else if (event.code === CLOSE_POLICY) {
        stop(_("Sending too fast closed the connection; reload the page to reconnect"));
      } else if (!opened) {
        // A refused handshake (401, 403) reaches the page only as 1006 before open: ask once
        // whether the session is still there before trying again.
        checkSession();
      } else {
        reconnectLater();
      }
    };
  }

  // Stop for good and say why (the status line and the message list both keep the reason).
  function stop(text, link) {
    stopped = true;
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    status.dataset.state = "stopped";
    status.replaceChildren(document.createTextNode(text));
    var item = document.createElement("li");
    item.className = "chat-notice chat-notice-error";
    item.appendChild(document.createTextNode(text));
    if (link) {
      status.appendChild(document.createTextNode(" "));
      status.appendChild(link.cloneNode(true));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(link);
    }
    place(item, null);
    input.disabled = true;
    form.querySelector("button").disabled = true;
  }

  function sessionEnded() {
    var link = document.createElement("a");
    link.className = "chat-login";
    link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = _("Log in again");
    stop(_("Your session has ended; please log in again"), link);
  }

  function checkSession() {
    setStatus("closed", _("Could not connect; checking whether you are still logged in…"));
    fetch("/user/me", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          sessionEnded();
        } else if (response.status === 403) {
          stop(_("You do not have permission to use the chat room"));
        } else {
          reconnectLater();
        }
      })
      .catch(function () {
        reconnectLater(); // the server is away, not the session
      });
  }

  // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
  function reconnectLater() {
    if (stopped) {
      return;
    }
    attempt += 1;
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt - 1));
    var delay = ceiling / 2 + Math.random() * (ceiling / 2);
    var seconds = Math.ceil(delay / 1000);
    setStatus("closed", _("Disconnected; reconnecting in {seconds} s", { seconds: seconds }));
    timer = window.setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (timer !== null && !stopped) {
      window.clearTimeout(timer);
      connect();
    }
  }

  function sendInput() {
    var text = input.value;
    if (!text.trim()) {
      return;
    }
    if (text.length > maxChars) {
      notice(_("The message is too long (at most {count} characters)", { count: maxChars }),
        "error");
      return;
    }
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      notice(_("Not connected yet: the message was not sent"), "error");
      return;
    }
    socket.send(JSON.stringify({ type: "message", text: text }));
    input.value = "";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    sendInput();
  });
  input.addEventListener("keydown", function (event) {
    // Enter sends; not while an input method is composing (Enter then confirms the characters).
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      sendInput();
    }
  });
  window.addEventListener("online", reconnectNow);

  connect();
})();
