// srft view: keyboard/mouse labelling and live agreement. All server data is inserted with textContent,
// never innerHTML: trajectories hold arbitrary HTML.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const stepsEl = document.getElementById("steps");
  if (!stepsEl) return;
  const trajectoryId = stepsEl.dataset.trajectory;
  const cards = Array.from(stepsEl.querySelectorAll("article.step"));
  const KEYS = { "1": "good", "2": "unnecessary", "3": "mistake", "4": "recover", "0": "" };
  const LABELS = ["good", "unnecessary", "mistake", "recover"];
  let current = -1;
  let queue = Promise.resolve(); // saves run one after another, in the order they were made

  function focusCard(i) {
    if (i < 0 || i >= cards.length) return;
    if (current >= 0) cards[current].classList.remove("focused");
    current = i;
    cards[i].classList.add("focused");
    cards[i].focus({ preventScroll: true });
    cards[i].scrollIntoView({ block: "nearest" });
  }

  function showLabel(card, label) {
    card.dataset.label = label;
    LABELS.forEach((l) => card.classList.remove("human-" + l));
    if (label) card.classList.add("human-" + label);
    card.querySelectorAll("button.lab").forEach((b) => {
      b.setAttribute("aria-pressed", String(label !== "" && b.dataset.label === label));
    });
  }

  function fmt(a) {
    if (!a || !a.steps) return "no common steps";
    const kappa = a.kappa === null ? "n/a" : a.kappa.toFixed(2);
    return a.steps + (a.steps === 1 ? " step" : " steps") + " · acc " + a.accuracy.toFixed(2) + " · κ " + kappa + " · F1 masked " + a.binary_f1.toFixed(2);
  }

  function showAgreement(data) {
    document.querySelectorAll("#agreement tr[data-source]").forEach((row) => {
      const name = row.dataset.source;
      row.querySelector(".here").textContent = fmt(data.trajectory[name]);
      row.querySelector(".overall").textContent = fmt(data.overall[name]);
    });
    const here = document.getElementById("labelled");
    if (here) here.textContent = String(data.labelled);
    const all = document.getElementById("labelled-overall");
    if (all) all.textContent = String(data.labelled_overall);
  }

  async function post(card, label) {
    const status = card.querySelector(".status");
    const note = card.querySelector("textarea.note").value;
    status.textContent = "saving…";
    card.classList.remove("error");
    const body = { trajectory_id: trajectoryId, step: Number(card.dataset.step), label: label || null, note: note };
    try {
      const r = await fetch("/api/label", {
        method: "POST", credentials: "same-origin", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      });
      if (!r.ok) throw new Error(r.status + " " + (await r.text()));
      const data = await r.json();
      showLabel(card, data.saved ? data.saved.label : "");
      status.textContent = data.saved ? "saved " + data.saved.updated_at : "cleared";
      showAgreement(data);
    } catch (err) {
      card.classList.add("error");
      status.textContent = "NOT saved: " + err.message;
    }
  }

  function save(card, label) {
    queue = queue.then(() => post(card, label));
    return queue;
  }

  cards.forEach((card, i) => {
    card.addEventListener("click", () => { if (current !== i) focusCard(i); });
    card.querySelectorAll("button.lab").forEach((b) => {
      b.addEventListener("click", (e) => { e.stopPropagation(); focusCard(i); save(card, b.dataset.label); });
    });
    const note = card.querySelector("textarea.note");
    note.addEventListener("change", () => {
      if (card.dataset.label) save(card, card.dataset.label);
      else card.querySelector(".status").textContent = "choose a label to save the note with";
    });
  });

  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, textarea, select")) {
      if (e.key === "Escape") { e.target.blur(); if (current >= 0) cards[current].focus({ preventScroll: true }); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || cards.length === 0) return;
    if (e.key === "j") focusCard(Math.min(current + 1, cards.length - 1));
    else if (e.key === "k") focusCard(Math.max(current - 1, 0));
    else if (e.key in KEYS) {
      if (current < 0) focusCard(0);
      save(cards[current], KEYS[e.key]);
    } else if (e.key === "n") {
      if (current < 0) focusCard(0);
      cards[current].querySelector("textarea.note").focus();
    } else return;
    e.preventDefault();
  });

  // -- token mask view ------------------------------------------------------------------------------------
  const toggle = document.getElementById("mask-toggle");
  if (!toggle) return;
  const out = document.getElementById("mask-out");

  function span(text, cls, title) {
    const s = document.createElement("span");
    s.textContent = text;
    if (cls) s.className = cls;
    if (title) s.title = title;
    return s;
  }

  async function loadMask() {
    const policy = document.getElementById("mask-policy").value;
    const source = document.getElementById("mask-source").value;
    const url = "/api/mask/" + encodeURIComponent(trajectoryId) + "?policy=" + encodeURIComponent(policy) +
      "&source=" + encodeURIComponent(source);
    out.replaceChildren(span("rendering…", "muted"));
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) { out.replaceChildren(span("mask unavailable: " + (await r.text()), "error-text")); return; }
    const data = await r.json();
    const head = document.createElement("p");
    head.className = "small";
    head.textContent = data.tokens + " tokens, " + data.trained + " trained (" + data.policy + ", labels from " +
      data.source + "); " + data.note;
    const body = document.createElement("pre");
    body.className = "tokens";
    data.segments.forEach((seg) => {
      const cls = "tok " + (seg.trained ? "trained" : "masked") + (seg.label ? " " + seg.label : "");
      const title = seg.step ? "step " + seg.step + (seg.label ? " · " + seg.label : "") + " · weight " + seg.weight : "not a step";
      body.appendChild(span(seg.text, cls, title));
    });
    const legend = document.createElement("p");
    legend.className = "small";
    legend.append("legend: ", span("trained", "tok trained"), " ", span("trained (unnecessary)", "tok trained unnecessary"),
      " ", span("masked step", "tok masked"), " ", span("masked mistake", "tok masked mistake"), " ",
      span("context (prompt, observations, template)", "tok masked"), "; hover a run for its step, label and weight");
    const warnings = (data.warnings || []).map((w) => span("warning: " + w, "error-text small"));
    out.replaceChildren(head, legend, ...warnings, body);
  }

  toggle.addEventListener("click", () => {
    if (!out.hidden) { out.hidden = true; toggle.textContent = "show token mask"; return; }
    out.hidden = false;
    toggle.textContent = "hide token mask";
    loadMask();
  });
  ["mask-policy", "mask-source"].forEach((id) => {
    document.getElementById(id).addEventListener("change", () => { if (!out.hidden) loadMask(); });
  });
})();
