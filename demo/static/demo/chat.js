// The demo chat page: a client of the public API and nothing else.
//
// It reads the newest page of a conversation, pages back through `previous`,
// then listens on the conversation's event stream (`EventSource`, resuming
// from the newest id it holds), or, where streams are not available, polls
// `?after=<last id seen>` with `If-None-Match`. It posts with an
// `Idempotency-Key`. Everything a person typed is put on the page with
// textContent, never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  // A stream that has not opened by then is taken as unavailable (a proxy
  // that buffers it, say): the page polls, and tries a stream again later.
  const STREAM_OPEN_MS = 5000;
  const STREAM_AGAIN_MS = 60000;
  const STORAGE_KEY = "chat-demo";
  // Closer to the bottom than this counts as reading the newest message.
  const NEAR_BOTTOM_PX = 40;
  // Closer to the top than this loads older messages by itself.
  const NEAR_TOP_PX = 300;
  // Messages from one sender this close together read as one block.
  const GROUP_WITHIN_MS = 5 * 60 * 1000;
  // A message that failed for want of a connection is sent again by itself
  // this many times when the server answers again; then it waits for Retry.
  const AUTOMATIC_RETRIES = 3;
  // While the stream is open no reconnect is coming to prompt that, so a
  // failed message goes again after this long (times its tries so far).
  const RESEND_LIVE_MS = 2000;
  const ANNOUNCED_KEPT = 5;
  const TITLE = document.title;
  // The API's field names, as the form labels call them.
  const FIELD_NAMES = { sender: "Name", conversation_id: "Conversation", message: "Message" };

  const $ = (id) => document.getElementById(id);
  const joinForm = $("join");
  const conversationInput = $("conversation");
  const nameInput = $("name");
  const joinedLine = $("joined");
  const changeButton = $("change");
  const connectionLine = $("connection");
  const intro = $("intro");
  const chat = $("chat");
  const connectionError = $("connection-error");
  const scroller = $("scroller");
  const startLine = $("start");
  const olderButton = $("older");
  const emptyLine = $("empty");
  const list = $("messages");
  const cue = $("new-messages");
  const announcer = $("announcer");
  const composer = $("composer");
  const sendError = $("send-error");
  const messageInput = $("message");

  // One joined conversation at a time. `session` is replaced on every Join,
  // so answers that arrive for a conversation the user has left are dropped.
  let session = null;

  // `retryable`: the same request may succeed later (no answer, or a 5xx);
  // a 4xx will fail the same way until the person changes something.
  class ApiError extends Error {
    constructor(message, { retryable, retryAfter = null }) {
      super(message);
      this.retryable = retryable;
      this.retryAfter = retryAfter;
    }
  }

  function show(element, text) {
    element.textContent = text;
    element.hidden = false;
  }

  function hide(element) {
    element.textContent = "";
    element.hidden = true;
  }

  const CONNECTION_STATES = {
    connecting: ["connecting…", "Loading the conversation."],
    live: ["live", "New messages arrive the moment they are sent."],
    polling: ["polling", `Checking for new messages every ${POLL_MS / 1000} s.`],
    paused: ["paused", "Not checking for new messages while the page is hidden."],
    reconnecting: ["reconnecting…", "The server is not answering; trying again."],
  };

  function setConnection(state) {
    const [text, explanation] = CONNECTION_STATES[state];
    connectionLine.dataset.state = state;
    connectionLine.title = explanation;
    show(connectionLine, text);
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

  function formatTime(when) {
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function dayKey(when) {
    return `${when.getFullYear()}-${when.getMonth()}-${when.getDate()}`;
  }

  function formatDay(when) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(when) === dayKey(today)) return "Today";
    if (dayKey(when) === dayKey(yesterday)) return "Yesterday";
    const options = { weekday: "long", day: "numeric", month: "long" };
    if (when.getFullYear() !== today.getFullYear()) options.year = "numeric";
    return when.toLocaleDateString([], options);
  }

  // ---- The list -----------------------------------------------------------

  function messageItem(current, sender, text, created) {
    const mine = sender === current.name;
    const item = document.createElement("li");
    item.className = mine ? "message mine" : "message";
    item.dataset.sender = sender;

    const meta = document.createElement("p");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "sender";
    who.textContent = mine ? "You" : sender;
    if (mine) who.title = sender;
    const time = document.createElement("time");
    meta.append(who, " ", time);

    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;

    item.append(meta, body);
    setCreated(item, created);
    return item;
  }

  function setCreated(item, created) {
    const when = new Date(created);
    item.dataset.created = created;
    const time = item.querySelector("time");
    time.dateTime = created;
    time.title = when.toLocaleString();
    time.textContent = formatTime(when);
  }

  function setState(item, state, { error = null, onRetry = null } = {}) {
    item.classList.remove("sending", "sent", "failed");
    item.classList.add(state);
    let line = item.querySelector(".state");
    if (!line) {
      line = document.createElement("p");
      line.className = "state";
      item.append(line);
    }
    line.replaceChildren();
    line.title = "";
    if (state === "sending") line.textContent = "Sending…";
    if (state === "sent") line.textContent = "Sent";
    if (state === "failed") {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "link";
      retry.textContent = "Retry";
      retry.addEventListener("click", onRetry);
      line.append("Not sent · ", retry);
      line.title = error;
    }
  }

  // Messages stored by the server, in id order; the ones still being sent
  // come after them all.
  function storedItems() {
    return list.querySelectorAll("li.message[data-id]");
  }

  function insertStored(item, id) {
    item.dataset.id = String(id);
    const items = storedItems();
    const last = items[items.length - 1];
    let next = null;
    if (last && Number(last.dataset.id) > id) {
      next = Array.from(items).find((li) => Number(li.dataset.id) > id);
    } else {
      next = list.querySelector("li.message:not([data-id])");
    }
    list.insertBefore(item, next);
  }

  // Day separators, runs of one sender, and "Sent" under the last message
  // sent from this page only: redone after every change, so they stay right
  // whichever end the messages went in at.
  function decorate() {
    for (const separator of list.querySelectorAll("li.day")) separator.remove();
    let previous = null;
    let lastSent = null;
    for (const item of list.querySelectorAll("li.message")) {
      const when = new Date(item.dataset.created);
      const newDay = !previous || dayKey(when) !== dayKey(new Date(previous.dataset.created));
      if (newDay) {
        const separator = document.createElement("li");
        separator.className = "day";
        separator.setAttribute("role", "separator");
        separator.textContent = formatDay(when);
        list.insertBefore(separator, item);
      }
      const grouped =
        !newDay &&
        previous.dataset.sender === item.dataset.sender &&
        when - new Date(previous.dataset.created) < GROUP_WITHIN_MS;
      item.classList.toggle("grouped", grouped);
      if (item.classList.contains("sent")) {
        item.querySelector(".state").hidden = true;
        lastSent = item;
      }
      previous = item;
    }
    if (lastSent) lastSent.querySelector(".state").hidden = false;
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    cue.hidden = true;
  }

  // The text of the first message in view: what the reader's eyes are on.
  // (Its bubble can change around it: its name goes when it joins a run.)
  function firstVisible() {
    const top = scroller.getBoundingClientRect().top;
    for (const text of list.querySelectorAll("li.message .text")) {
      if (text.getBoundingClientRect().bottom > top) return text;
    }
    return null;
  }

  // Runs a change to the list without moving what the reader is looking at:
  // a reader at the bottom stays at the bottom, any other keeps the first
  // message in view exactly where it was, whatever went in above it.
  function keepingPlace(change) {
    const atBottom = nearBottom();
    const anchor = firstVisible();
    const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;
    change();
    if (atBottom) {
      scrollToBottom();
    } else if (anchor && anchor.isConnected) {
      scroller.scrollTop += anchor.getBoundingClientRect().top - anchorTop;
    }
    return atBottom;
  }

  function updateEnds(current) {
    const hasMessages = list.querySelector("li.message") !== null;
    olderButton.hidden = !current.previous;
    startLine.hidden = !(current.loaded && !current.previous && hasMessages);
    if (current.loaded && !hasMessages) {
      show(emptyLine, `No messages in ${current.id} yet. Write the first one below.`);
    } else {
      hide(emptyLine);
    }
  }

  // Puts stored messages into the list in id order, each once: a message can
  // arrive both as the answer to our own POST and in a later poll.
  // `announce`: they are new arrivals (not history), to be read out, counted
  // in the title while the reader is away, and pointed at if scrolled up.
  function addMessages(current, messages, { announce = false, previous } = {}) {
    const added = [];
    const atBottom = keepingPlace(() => {
      for (const message of messages) {
        if (current.shown.has(message.id)) continue;
        current.shown.add(message.id);
        if (claim(current, message)) continue;
        const item = messageItem(current, message.sender, message.message, message.created);
        insertStored(item, message.id);
        added.push(message);
      }
      if (previous !== undefined) current.previous = previous;
      decorate();
      updateEnds(current);
    });
    if (!announce) return;
    const theirs = added.filter((message) => message.sender !== current.name);
    for (const message of theirs) {
      const line = document.createElement("p");
      line.textContent = `${message.sender}: ${message.message}`;
      announcer.append(line);
    }
    while (announcer.childElementCount > ANNOUNCED_KEPT) announcer.firstElementChild.remove();
    if (theirs.length && !atBottom) cue.hidden = false;
    if (theirs.length && !looking()) {
      current.unread += theirs.length;
      updateTitle(current);
    }
  }

  // A message of ours whose answer was lost can arrive on the stream (or a
  // poll) before its retry is answered: the bubble already on the page takes
  // its place instead of a second one. The retry, with the same key, then
  // confirms it.
  function claim(current, message) {
    if (message.sender !== current.name) return false;
    const entry = current.outbox.find(
      (e) => e.attempted && !e.claimed && e.text === message.message,
    );
    if (!entry) return false;
    entry.claimed = message;
    setCreated(entry.item, message.created);
    insertStored(entry.item, message.id);
    return true;
  }

  // ---- Reading ------------------------------------------------------------

  async function loadNewest(current) {
    const response = await request(conversationUrl(current.id), {});
    const page = await response.json();
    if (current !== session) return;
    current.loaded = true;
    addMessages(current, page.messages, { previous: page.previous });
    scrollToBottom();
    if (page.messages.length) current.lastId = page.messages[page.messages.length - 1].id;
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
      addMessages(current, page.messages, { announce: true });
      if (page.messages.length) current.lastId = page.messages[page.messages.length - 1].id;
      if (!page.next) return;
      url = page.next;
    }
  }

  // ---- Live: the event stream --------------------------------------------

  function eventsUrl(current) {
    const url = new URL(`/conversations/${encodeURIComponent(current.id)}/events`, location.href);
    url.searchParams.set("last_event_id", current.lastId);
    return url.href;
  }

  // After the newest page has loaded: a stream where the browser has one,
  // polling otherwise.
  function connect(current) {
    if ("EventSource" in window) {
      openStream(current);
    } else {
      setConnection("polling");
      schedulePoll(current, POLL_MS);
    }
  }

  function closeStream(current) {
    clearTimeout(current.streamAgain);
    if (current.source) current.source.close();
    current.source = null;
  }

  function openStream(current) {
    if (current !== session || current.source) return;
    const source = new EventSource(eventsUrl(current));
    current.source = source;
    const unopened = setTimeout(() => fallBack(current, source), STREAM_OPEN_MS);
    source.addEventListener("open", () => {
      if (current.source !== source) return;
      clearTimeout(unopened);
      clearTimeout(current.timer);
      current.failing = false;
      hide(connectionError);
      setConnection("live");
      // Connected again: what could not be sent goes now.
      retryFailed(current, { automatic: true, reconnected: true });
    });
    source.addEventListener("message", (event) => {
      if (current.source !== source) return;
      const message = JSON.parse(event.data);
      addMessages(current, [message], { announce: true });
      current.lastId = Math.max(current.lastId, message.id);
    });
    // More was missed than the stream replays: start again from the newest page.
    source.addEventListener("reset", () => {
      if (current.source !== source) return;
      closeStream(current);
      join(current.id, current.name);
    });
    source.addEventListener("error", () => {
      if (current.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (not a stream, or a 4xx/5xx): EventSource gives up.
        clearTimeout(unopened);
        fallBack(current, source);
      } else {
        // The browser reconnects by itself, resuming after the last id.
        setConnection("reconnecting");
      }
    });
  }

  function fallBack(current, source) {
    if (current.source !== source) return;
    closeStream(current);
    setConnection(current.failing ? "reconnecting" : "polling");
    schedulePoll(current, 0);
    current.streamAgain = setTimeout(() => openStream(current), STREAM_AGAIN_MS);
  }

  // ---- Polling, where there is no stream ------------------------------------

  function schedulePoll(current, delayMs) {
    clearTimeout(current.timer);
    if (current.source) return;
    current.timer = setTimeout(async () => {
      if (current.source) return;
      // A hidden tab asks the server nothing; it catches up when shown.
      if (document.visibilityState === "hidden") {
        current.paused = true;
        setConnection("paused");
        return;
      }
      let delay = POLL_MS;
      try {
        // Until the newest page has loaded, polling retries that, rather
        // than reading the whole history from after=0.
        const loading = !current.loaded;
        await (loading ? loadNewest(current) : pollOnce(current));
        if (current !== session || current.source) return;
        if (current.failing) {
          current.failing = false;
          hide(connectionError);
        }
        if (loading) {
          connect(current);
          return;
        }
        setConnection("polling");
        // The server answers again: what could not be sent goes now.
        retryFailed(current, { automatic: true });
      } catch (error) {
        if (current !== session) return;
        current.failing = true;
        setConnection("reconnecting");
        if (error.retryAfter) delay = error.retryAfter * 1000;
        const doing = current.loaded ? "check for new messages" : `load conversation ${current.id}`;
        show(connectionError, `Could not ${doing}: ${error.message} Trying again in ${delay / 1000} s.`);
      }
      if (current === session) schedulePoll(current, delay);
    }, delayMs);
  }

  async function loadOlder() {
    const current = session;
    if (!current || !current.previous || current.loadingOlder) return;
    current.loadingOlder = true;
    olderButton.disabled = true;
    try {
      const response = await request(current.previous, {});
      const page = await response.json();
      if (current !== session) return;
      addMessages(current, page.messages, { previous: page.previous });
    } catch (error) {
      if (current === session) show(connectionError, `Could not load older messages: ${error.message}`);
    } finally {
      current.loadingOlder = false;
      olderButton.disabled = false;
    }
  }

  // ---- Sending ------------------------------------------------------------

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // One POST, tried again where a 503 or 429 says when; the same key makes
  // every try safe.
  async function post(entry) {
    for (let tries = 1; ; tries++) {
      try {
        const response = await request("/messages/", {
          method: "POST",
          headers: { "Content-Type": "application/json", "Idempotency-Key": entry.key },
          body: entry.body,
        });
        consistencyToken = response.headers.get("Consistency-Token") || consistencyToken;
        return {
          message: await response.json(),
          replayed: response.headers.get("Idempotent-Replayed") === "true",
        };
      } catch (error) {
        if (error.retryAfter === null || tries >= 3) throw error;
        entry.item.querySelector(".state").textContent = `Sending… (trying again in ${error.retryAfter} s)`;
        await sleep(error.retryAfter * 1000);
      }
    }
  }

  // Sends the outbox one message at a time, so that messages are stored in
  // the order they were written.
  async function pump(current) {
    if (current.sending) return;
    const entry = current.outbox.find((e) => e.state === "queued");
    if (!entry) return;
    current.sending = true;
    entry.state = "sending";
    entry.attempted = true;
    setState(entry.item, "sending");
    try {
      const { message, replayed } = await post(entry);
      if (current !== session) return;
      current.outbox.splice(current.outbox.indexOf(entry), 1);
      let item = entry.item;
      keepingPlace(() => {
        const claimed = entry.claimed;
        if (claimed && claimed.id !== message.id) {
          // What looked like this message was another with the same text.
          const other = messageItem(current, claimed.sender, claimed.message, claimed.created);
          insertStored(other, claimed.id);
        }
        if (claimed && claimed.id === message.id) {
          setCreated(item, message.created);
        } else if (current.shown.has(message.id)) {
          // A poll brought it first (its first answer was lost, say).
          item.remove();
          item = list.querySelector(`li.message[data-id="${message.id}"]`);
        } else {
          current.shown.add(message.id);
          setCreated(item, message.created);
          insertStored(item, message.id);
        }
        setState(item, "sent");
        if (replayed) item.querySelector(".state").title = "The server already had it.";
        decorate();
        updateEnds(current);
      });
    } catch (error) {
      if (current !== session) return;
      if (error.retryable) {
        for (const waiting of current.outbox) {
          if (waiting.state === "failed") continue;
          waiting.state = "failed";
          setState(waiting.item, "failed", {
            error: error.message,
            onRetry: () => retryFailed(current, { automatic: false }),
          });
        }
        announce(`Message not sent: ${error.message}`);
        if (streamOpen(current)) scheduleResend(current);
      } else {
        // The server will refuse it again as it is: back to the composer,
        // with the reason, for the person to change.
        current.outbox.splice(current.outbox.indexOf(entry), 1);
        keepingPlace(() => {
          entry.item.remove();
          decorate();
          updateEnds(current);
        });
        if (!messageInput.value) {
          messageInput.value = entry.text;
          fitComposer();
        }
        show(sendError, `Could not send your message: ${error.message}`);
      }
    } finally {
      current.sending = false;
    }
    if (current === session) pump(current);
  }

  function streamOpen(current) {
    return current.source !== null && current.source.readyState === EventSource.OPEN;
  }

  function scheduleResend(current) {
    clearTimeout(current.resendTimer);
    const waiting = current.outbox.filter(
      (entry) => entry.state === "failed" && entry.automaticRetries < AUTOMATIC_RETRIES,
    );
    if (!waiting.length) return;
    const tries = Math.min(...waiting.map((entry) => entry.automaticRetries));
    current.resendTimer = setTimeout(() => {
      if (current === session && streamOpen(current)) retryFailed(current, { automatic: true });
    }, RESEND_LIVE_MS * (tries + 1));
  }

  // `reconnected`: the connection was lost and is back, which is worth new
  // automatic tries however many the message had before.
  function retryFailed(current, { automatic, reconnected = false }) {
    if (current !== session) return;
    let any = false;
    for (const entry of current.outbox) {
      if (entry.state !== "failed") continue;
      if (reconnected) entry.automaticRetries = 0;
      if (automatic && entry.automaticRetries >= AUTOMATIC_RETRIES) continue;
      if (automatic) entry.automaticRetries += 1;
      entry.state = "queued";
      setState(entry.item, "sending");
      any = true;
    }
    if (any) pump(current);
  }

  function send() {
    const current = session;
    const text = messageInput.value;
    if (!current || !text.trim()) return;
    const entry = {
      key: newKey(),
      text,
      body: JSON.stringify({ sender: current.name, conversation_id: current.id, message: text }),
      state: "queued",
      automaticRetries: 0,
      attempted: false,
      claimed: null,
      item: messageItem(current, current.name, text, new Date().toISOString()),
    };
    setState(entry.item, "sending");
    current.outbox.push(entry);
    messageInput.value = "";
    fitComposer();
    hide(sendError);
    list.append(entry.item);
    decorate();
    updateEnds(current);
    scrollToBottom();
    pump(current);
  }

  function announce(text) {
    const line = document.createElement("p");
    line.textContent = text;
    announcer.append(line);
    while (announcer.childElementCount > ANNOUNCED_KEPT) announcer.firstElementChild.remove();
  }

  // ---- Joining, the title, and the page's life ------------------------------

  function looking() {
    return document.visibilityState === "visible" && document.hasFocus();
  }

  function updateTitle(current) {
    const base = `${current.id} · ${TITLE}`;
    document.title = current.unread ? `(${current.unread}) ${base}` : base;
  }

  function fold(folded) {
    joinForm.hidden = folded;
    joinedLine.hidden = !folded;
  }

  async function join(id, name) {
    if (session) {
      clearTimeout(session.timer);
      clearTimeout(session.resendTimer);
      closeStream(session);
    }
    const current = {
      id,
      name,
      shown: new Set(),
      lastId: 0,
      previous: null,
      etag: null,
      loaded: false,
      failing: false,
      paused: false,
      loadingOlder: false,
      unread: 0,
      outbox: [],
      sending: false,
      timer: null,
      resendTimer: null,
      source: null,
      streamAgain: null,
    };
    session = current;
    list.replaceChildren();
    announcer.replaceChildren();
    hide(connectionError);
    hide(sendError);
    cue.hidden = true;
    updateEnds(current);
    intro.hidden = true;
    chat.hidden = false;
    $("joined-conversation").textContent = id;
    $("joined-name").textContent = name;
    joinedLine.title = `${id} as ${name}`;
    fold(true);
    updateTitle(current);
    setConnection("connecting");
    try {
      await loadNewest(current);
    } catch (error) {
      if (current !== session) return;
      current.failing = true;
      setConnection("reconnecting");
      show(connectionError, `Could not load conversation ${id}: ${error.message} Trying again shortly.`);
    }
    if (current !== session) return;
    if (current.failing) {
      schedulePoll(current, POLL_MS);
    } else {
      connect(current);
    }
    messageInput.focus();
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

  changeButton.addEventListener("click", () => {
    fold(false);
    conversationInput.focus();
  });

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  // The box grows with what is typed, up to its CSS max-height, then scrolls.
  function fitComposer() {
    messageInput.style.height = "auto";
    messageInput.style.height = `${messageInput.scrollHeight + 2}px`;
  }

  messageInput.addEventListener("input", fitComposer);

  messageInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  olderButton.addEventListener("click", loadOlder);

  // A banner that comes or goes resizes the list: a reader at the bottom
  // stays there rather than losing the newest messages under the composer.
  let stuckToBottom = true;
  new ResizeObserver(() => {
    if (stuckToBottom) scrollToBottom();
  }).observe(scroller);

  scroller.addEventListener("scroll", () => {
    stuckToBottom = nearBottom();
    if (stuckToBottom) cue.hidden = true;
    if (scroller.scrollTop < NEAR_TOP_PX && session && session.loaded) loadOlder();
  });

  cue.addEventListener("click", () => {
    scrollToBottom();
    messageInput.focus();
  });

  function backInView() {
    if (!session) return;
    if (looking() && session.unread) {
      session.unread = 0;
      updateTitle(session);
    }
    if (document.visibilityState === "visible" && session.paused && !session.source) {
      session.paused = false;
      setConnection(session.failing ? "reconnecting" : "polling");
      schedulePoll(session, 0);
    }
  }

  document.addEventListener("visibilitychange", backInView);
  window.addEventListener("focus", backInView);
  // The network is back: send now whatever could not be sent, and, where
  // there is no stream, check now rather than at the next tick.
  window.addEventListener("online", () => {
    if (!session) return;
    if (streamOpen(session)) {
      retryFailed(session, { automatic: true, reconnected: true });
    } else if (!session.paused && !session.source) {
      for (const entry of session.outbox) entry.automaticRetries = 0;
      schedulePoll(session, 0);
    }
  });

  const saved = remembered();
  if (typeof saved.conversation === "string") conversationInput.value = saved.conversation;
  if (typeof saved.name === "string") nameInput.value = saved.name;
  if (conversationInput.value && nameInput.value && joinForm.checkValidity()) {
    join(conversationInput.value, nameInput.value);
  }
})();
