// Added to the demo's own page by examples/tests/demo.rs (`panel_*` tests) and run in a headless
// browser: drives the page as a person would (an echo over a stream, then a datagram), reads
// the live panel from the page's DOM, polling with a deadline, and POSTs each check to /result
// as a JSON line ({"check", "ok", "detail"}), "done" last. PANEL_TIMEOUT_MS is set before this
// script.
"use strict";
(() => {
  const deadline = Date.now() + PANEL_TIMEOUT_MS;
  const report = (check, ok, detail) =>
    fetch("/result", { method: "POST", body: JSON.stringify({ check, ok, detail }) + "\n" });
  const el = (id) => document.getElementById(id);
  // The panel's raw number in a cell, NaN while it is empty.
  const value = (id) => Number(el(id).dataset.value ?? NaN);
  const tick = () => new Promise((resolve) => setTimeout(resolve, 50));
  // Polls `ready` until it is true; throws, naming `what`, at the deadline.
  const until = async (what, ready) => {
    while (!ready()) {
      if (Date.now() > deadline) throw new Error(`no ${what} in ${PANEL_TIMEOUT_MS} ms`);
      await tick();
    }
  };
  const snapshot = (name) => {
    const fields = [
      "smoothedRttMs", "bytesSent", "bytesReceived", "datagramsSent", "datagramsReceived",
      "datagramsDroppedOnSend", "datagramsDroppedOnReceive", "streams", "samples",
    ];
    const out = {};
    for (const field of fields) out[field] = value(`${name}-${field}`);
    out.browser = el(`${name}-browser`).textContent;
    return out;
  };
  // Whether the canvas has any pixel drawn.
  const drawn = (id) => {
    const canvas = el(id);
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
    return false;
  };
  const submit = (form, text) => {
    el(form).querySelector("input").value = text;
    el(form).requestSubmit();
  };

  async function echo() {
    await until("first /echo sample", () => value("echo-samples") >= 1);
    const first = snapshot("echo");
    if (first.bytesSent !== 0 || first.bytesReceived !== 0) {
      throw new Error(`bytes before any echo (the feed must be left out): ${JSON.stringify(first)}`);
    }
    await until("enabled stream form", () => !el("stream").querySelector("button").disabled);
    submit("stream", "panel check");
    await until("stream echo", () => el("stream-reply").textContent === "panel check");
    // Datagrams may be lost: sent again every 250 ms until one comes back.
    let sentAt = 0;
    await until("datagram echo", () => {
      if (el("datagram-reply").textContent.startsWith("panel datagram")) return true;
      if (Date.now() - sentAt > 250) {
        submit("datagram", "panel datagram");
        sentAt = Date.now();
      }
      return false;
    });
    await until("a sample after the echo", () => {
      const now = snapshot("echo");
      return now.samples > first.samples && now.bytesSent > 0 && now.bytesReceived > 0
        && now.datagramsReceived > 0 && now.datagramsSent > 0;
    });
    const after = snapshot("echo");
    if (!(after.smoothedRttMs > 0)) throw new Error(`RTT not above 0: ${JSON.stringify(after)}`);
    // "panel check" went each way on a stream.
    if (after.bytesSent < 11 || after.bytesReceived < 11) {
      throw new Error(`fewer bytes than the echo: ${JSON.stringify(after)}`);
    }
    return `before the echo ${JSON.stringify(first)}; after ${JSON.stringify(after)}`;
  }

  async function chat() {
    await until("two /chat samples", () => value("chat-samples") >= 2);
    const now = snapshot("chat");
    if (!(now.smoothedRttMs > 0)) throw new Error(`RTT not above 0: ${JSON.stringify(now)}`);
    return JSON.stringify(now);
  }

  async function check(name, run) {
    try {
      const detail = await run();
      await report(name, true, detail);
    } catch (error) {
      await report(name, false, String(error));
    }
  }

  (async () => {
    await check("panel_echo", echo);
    await check("panel_chat", chat);
    await check("panel_plot", async () => {
      const plots = ["echo-plot", "chat-plot"];
      const blank = plots.filter((id) => !drawn(id));
      if (blank.length) throw new Error(`nothing drawn on ${blank}`);
      return `drawn: ${plots}`;
    });
    await report("done", true, "");
  })();
})();
