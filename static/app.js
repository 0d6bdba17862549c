"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const messages = $("messages"), text = $("text"), send = $("send"), nameInput = $("name");
  let socket = null, myId = null, attempt = 0, retryTimer = null;

  nameInput.value = localStorage.getItem("chatd.name") || "";

  function setState(state) {
    $("state").dataset.state = state;
    $("state").textContent = state;
    const online = state === "connected";
    text.disabled = !online;
    send.disabled = !online;
  }

  function add(node) {
    messages.append(node);
    messages.scrollTop = messages.scrollHeight;
  }

  function pill(message) {
    const div = document.createElement("div");
    div.className = "pill";
    div.textContent = message;
    add(div);
  }

  function bubble(event) {
    const div = document.createElement("div");
    const own = event.from.id === myId;
    div.className = own ? "bubble own" : "bubble";
    if (!own) {
      const who = document.createElement("div");
      who.className = "who";
      who.textContent = event.from.name;
      div.append(who);
    }
    const body = document.createElement("span");
    body.textContent = event.message;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = new Date(event.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    div.append(body, time);
    add(div);
  }

  function connect(delay) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      setState(attempt === 0 ? "connecting" : "reconnecting");
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const name = nameInput.value.trim();
      const query = name ? `?name=${encodeURIComponent(name)}` : "";
      socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
      socket.onopen = () => { attempt = 0; setState("connected"); };
      socket.onmessage = (e) => handle(JSON.parse(e.data));
      socket.onclose = () => {
        setState("offline");
        attempt += 1;
        const backoff = Math.min(30000, 500 * 2 ** attempt);
        connect(backoff / 2 + Math.random() * backoff / 2);
      };
    }, delay);
  }

  function handle(event) {
    switch (event.type) {
      case "welcome":
        myId = event.client_id;
        $("online").textContent = `${event.online} online`;
        pill(`Welcome, ${event.name}`);
        break;
      case "echo": bubble(event); break;
      case "notification": pill(event.message); break;
      case "shutdown_notice":
        pill(event.message);
        break;
      case "error": pill(`Error: ${event.message}`); break;
    }
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = text.value;
    if (!message.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", message }));
    text.value = "";
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("name-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("chatd.name", nameInput.value.trim());
    if (socket) socket.close();
  });

  connect(0);
})();
