// The demo chat page: a client of the public API and nothing else.
//
// It reads the newest page of a conversation, pages back through `previous`,
// polls `?after=<last id seen>` with `If-None-Match`, and posts with an
// `Idempotency-Key`. Everything a person typed is put on the page with
// textContent, never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const STORAGE_KEY = "chat-demo";
  // The API's field names, as the form labels call them.
  const FIELD_NAMES = { sender: "Name", conversation_id: "Conversation", message: "Message" };

  const $ = (id) => document.getElementById(id);
  const joinForm = $("join");
  const conversationInput = $("conversation");
  const nameInput = $("name");
  const statusLine = $("status");
  const errorLine = $("error");
  const chat = $("chat");
  const olderButton = $("older");
  // The list scrolls by itself, so the composer stays in view.
  const list = $("messages");
  const scroller = list;
  const composer = $("composer");
  const messageInput = $("message");
  const sendButton = $("send");

  // One joined conversation at a time. `session` is replaced on every Join,
  // so answers that arrive for a conversation the user has left are dropped.
  let session = null;
  // The message being sent and its key: a retry of the same payload reuses
  // the key, so the server can answer with the original instead of storing
  // it twice. A changed payload is a new message and gets a new key.
  let pending = null;

  // `retryable`: the same request may succeed later (no answer, or a 5xx);
  // a 4xx will fail the same way until the person changes something.
  class ApiError extends Error {
    constructor(message, { retryable, retryAfter = null }) {
      super(message);
      this.retryable = retryable;
      this.retryAfter = retryAfter;
    }
  }

  function showStatus(text) {
    statusLine.textContent = text;
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = false;
  }

  function clearError() {
    errorLine.textContent = "";
    errorLine.hidden = true;
  }

  // crypto.randomUUID exists only in secure contexts (HTTPS or localhost);
  // a demo served over plain HTTP on a LAN address still needs fresh keys.
  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function retryAfterSeconds(response) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
  }

  // Turns any failed answer into a sentence: the problem+json `errors` per
  // field when there are some, else its `detail`, else the HTTP status.
  async function describeFailure(response) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      // Not JSON (a proxy's error page, say): the status line will do.
    }
    let text;
    if (problem && problem.errors && typeof problem.errors === "object") {
      text = Object.entries(problem.errors)
        .map(([field, messages]) => `${FIELD_NAMES[field] || field}: ${[].concat(messages).join(" ")}`)
        .join("; ");
    } else if (problem && typeof problem.detail === "string") {
      text = problem.detail;
    } else {
      text = `The server answered ${response.status} ${response.statusText}`.trim() + ".";
    }
    if (!/[.!?]$/.test(text)) text += ".";
    return new ApiError(text, {
      retryable: response.status >= 500 || response.status === 429,
      retryAfter: retryAfterSeconds(response),
    });
  }

  // Where the service reads from replicas, each 201 carries a Consistency-Token
  // (opaque); sent back on reads, it makes them show what this page has sent,
  // whichever server answers. (Same-origin, the cookie does the same.)
  let consistencyToken = null;

  async function request(url, options) {
    const headers = { ...(options.headers || {}) };
    if (consistencyToken && !options.method) headers["Consistency-Token"] = consistencyToken;
    let response;
    try {
      response = await fetch(url, { ...options, headers, cache: "no-store" });
    } catch {
      throw new ApiError("The server could not be reached; check your connection.", {
        retryable: true,
      });
    }
    if (!response.ok && response.status !== 304) throw await describeFailure(response);
    return response;
  }

  function conversationUrl(id, query) {
    const url = new URL(`/conversations/${encodeURIComponent(id)}`, location.href);
    for (const [name, value] of Object.entries(query || {})) url.searchParams.set(name, value);
    return url.href;
  }

  function formatTime(iso) {
    const when = new Date(iso);
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageItem(message, me) {
    const item = document.createElement("li");
    item.className = message.sender === me ? "message mine" : "message";
    item.dataset.id = String(message.id);

    const meta = document.createElement("p");
    meta.className = "meta";
    const sender = document.createElement("span");
    sender.className = "sender";
    sender.textContent = message.sender;
    const time = document.createElement("time");
    time.dateTime = message.created;
    time.title = message.created;
    time.textContent = formatTime(message.created);
    meta.append(sender, " ", time);

    const text = document.createElement("p");
    text.className = "text";
    text.textContent = message.message;

    item.append(meta, text);
    return item;
  }

  // Puts messages into the list in id order, each once: a message can arrive
  // both as the answer to our own POST and in a later poll, and polls can
  // bring messages older than one we just sent.
  function addMessages(current, messages) {
    const nearBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    const heightBefore = scroller.scrollHeight;
    let addedAtEnd = false;
    let addedAbove = false;
    for (const message of messages) {
      if (current.shown.has(message.id)) continue;
      current.shown.add(message.id);
      const item = messageItem(message, current.name);
      const last = list.lastElementChild;
      const next =
        last && Number(last.dataset.id) > message.id
          ? Array.from(list.children).find((li) => Number(li.dataset.id) > message.id)
          : null;
      if (next) {
        list.insertBefore(item, next);
        if (next === list.firstElementChild) addedAbove = true;
      } else {
        list.append(item);
        addedAtEnd = true;
      }
    }
    if (addedAtEnd && nearBottom) {
      scroller.scrollTop = scroller.scrollHeight;
    } else if (addedAbove && !addedAtEnd) {
      // Older messages went in above: keep what the reader was looking at still.
      scroller.scrollTop += scroller.scrollHeight - heightBefore;
    }
  }

  function setPrevious(current, url) {
    current.previous = url;
    olderButton.hidden = !url;
  }

  async function loadNewest(current) {
    const response = await request(conversationUrl(current.id), {});
    const page = await response.json();
    if (current !== session) return;
    addMessages(current, page.messages);
    scroller.scrollTop = scroller.scrollHeight;
    setPrevious(current, page.previous);
    if (page.messages.length) current.lastId = page.messages[page.messages.length - 1].id;
    current.loaded = true;
  }

  // Reads everything newer than the last message seen. A `304` for the same
  // URL means nothing new; a full page has a `next` link to follow at once.
  async function pollOnce(current) {
    let url = conversationUrl(current.id, { after: current.lastId });
    for (;;) {
      const headers = {};
      if (current.etag && current.etag.url === url) headers["If-None-Match"] = current.etag.value;
      const response = await request(url, { headers });
      if (current !== session) return;
      const etag = response.headers.get("ETag");
      current.etag = etag ? { url, value: etag } : null;
      if (response.status === 304) return;
      const page = await response.json();
      if (current !== session) return;
      addMessages(current, page.messages);
      if (page.messages.length) current.lastId = page.messages[page.messages.length - 1].id;
      if (!page.next) return;
      url = page.next;
    }
  }

  function schedulePoll(current, delayMs) {
    current.timer = setTimeout(async () => {
      let delay = POLL_MS;
      try {
        // Until the newest page has loaded, polling retries that, rather
        // than reading the whole history from after=0.
        await (current.loaded ? pollOnce(current) : loadNewest(current));
        if (current === session && current.failing) {
          current.failing = false;
          clearError();
          showStatus(`Connected to conversation ${current.id} as ${current.name}.`);
        }
      } catch (error) {
        if (current !== session) return;
        current.failing = true;
        if (error.retryAfter) delay = error.retryAfter * 1000;
        const doing = current.loaded ? "check for new messages" : `load conversation ${current.id}`;
        showError(`Could not ${doing}: ${error.message} Trying again in ${delay / 1000} s.`);
      }
      if (current === session) schedulePoll(current, delay);
    }, delayMs);
  }

  async function join(id, name) {
    if (session) clearTimeout(session.timer);
    const current = {
      id,
      name,
      shown: new Set(),
      lastId: 0,
      previous: null,
      etag: null,
      loaded: false,
      failing: false,
    };
    session = current;
    pending = null;
    list.replaceChildren();
    setPrevious(current, null);
    clearError();
    chat.hidden = false;
    showStatus(`Loading conversation ${id}…`);
    try {
      await loadNewest(current);
    } catch (error) {
      if (current !== session) return;
      current.failing = true;
      showStatus("");
      showError(`Could not load conversation ${id}: ${error.message} Trying again shortly.`);
    }
    if (current !== session) return;
    if (!current.failing) showStatus(`Connected to conversation ${id} as ${name}.`);
    schedulePoll(current, POLL_MS);
    messageInput.focus();
  }

  async function loadOlder() {
    const current = session;
    if (!current || !current.previous) return;
    olderButton.disabled = true;
    try {
      const response = await request(current.previous, {});
      const page = await response.json();
      if (current !== session) return;
      addMessages(current, page.messages);
      setPrevious(current, page.previous);
      clearError();
      showStatus(
        page.previous ? `Loaded ${page.messages.length} older messages.` : "This is the start of the conversation."
      );
    } catch (error) {
      if (current === session) showError(`Could not load older messages: ${error.message}`);
    } finally {
      olderButton.disabled = false;
    }
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async function send() {
    const current = session;
    if (!current || sendButton.disabled) return;
    const body = JSON.stringify({ sender: current.name, conversation_id: current.id, message: messageInput.value });
    if (!pending || pending.body !== body) pending = { body, key: newKey() };
    const attempt = pending;

    sendButton.disabled = true;
    showStatus("Sending…");
    try {
      // A 503 says when to try again; the same key makes the retry safe.
      for (let tries = 1; ; tries++) {
        try {
          const response = await request("/messages/", {
            method: "POST",
            headers: { "Content-Type": "application/json", "Idempotency-Key": attempt.key },
            body: attempt.body,
          });
          const message = await response.json();
          consistencyToken = response.headers.get("Consistency-Token") || consistencyToken;
          if (pending === attempt) pending = null;
          if (current !== session) return;
          if (messageInput.value === message.message) messageInput.value = "";
          addMessages(current, [message]);
          scroller.scrollTop = scroller.scrollHeight;
          clearError();
          showStatus(response.headers.get("Idempotent-Replayed") === "true" ? "Sent (the server already had it)." : "Sent.");
          return;
        } catch (error) {
          if (error.retryAfter === null || tries >= 3) throw error;
          showError(`Could not send yet: ${error.message} Trying again in ${error.retryAfter} s.`);
          await sleep(error.retryAfter * 1000);
        }
      }
    } catch (error) {
      if (current !== session) return;
      showStatus("");
      const advice = error.retryable ? " Press Send to try again." : "";
      showError(`Could not send your message: ${error.message}${advice}`);
    } finally {
      sendButton.disabled = false;
    }
  }

  function remembered() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
    } catch {
      return {};
    }
  }

  function remember(values) {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(values));
    } catch {
      // Storage can be full or switched off; the page works without it.
    }
  }

  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = conversationInput.value.trim();
    const name = nameInput.value.trim();
    conversationInput.value = id;
    nameInput.value = name;
    if (!joinForm.reportValidity()) return;
    remember({ conversation: id, name });
    join(id, name);
  });

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  messageInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  olderButton.addEventListener("click", loadOlder);

  const saved = remembered();
  if (typeof saved.conversation === "string") conversationInput.value = saved.conversation;
  if (typeof saved.name === "string") nameInput.value = saved.name;
  if (conversationInput.value && nameInput.value && joinForm.checkValidity()) {
    join(conversationInput.value, nameInput.value);
  }
})();
