// The browser reader page of an ldct reader study: the same blinded /study/ routes the Slicer
// panel uses, with the reader's token sent only as "Authorization: Bearer". The page sees items,
// images "A"/"B" and opaque tokens, never a condition. See ldct/study/page.py.
"use strict";

(() => {
  const TOKEN_KEY = "ldct-reader-token";
  const PRESETS = { liver: [400, 40], abdomen: [350, 40], wide: [1500, -100] };
  const PRESET_ORDER = ["study", "liver", "abdomen", "wide"];
  const $ = (id) => document.getElementById(id);

  const state = {
    token: null, study: null, reader: null, info: null, item: null,
    volumes: {}, answers: {}, choice: null, rows: [], active: 0,
    shownAt: 0, submissionId: null, sending: false,
    view: { slice: 0, zoom: 1, panX: 0, panY: 0, width: 400, level: 40, preset: "study" },
  };

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  // -- the token: from the link's fragment (never sent to a server) into this tab only ----------
  function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("token")) {
      sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + state.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  function say(text) { $("message").textContent = text; }

  function show(section) {
    for (const id of ["login", "reader", "finished"]) $(id).hidden = id !== section;
  }

  // -- NRRD (the study's uncompressed int16 volumes) ------------------------------------------
  function parseNrrd(buffer) {
    const bytes = new Uint8Array(buffer);
    let end = -1;
    for (let i = 0; i < Math.min(bytes.length - 1, 65536); i++) {
      if (bytes[i] === 10 && bytes[i + 1] === 10) { end = i; break; }
    }
    if (end < 0) throw new Error("the volume is not an NRRD file");
    const fields = {};
    for (const line of new TextDecoder().decode(bytes.subarray(0, end)).split("\n")) {
      const at = line.indexOf(": ");
      if (at > 0 && !line.startsWith("#")) fields[line.slice(0, at).trim()] = line.slice(at + 2).trim();
    }
    if (!["short", "int16", "signed short", "int16_t", "short int", "signed short int"].includes(fields.type)
        || fields.encoding !== "raw" || fields.dimension !== "3") {
      throw new Error("the volume is not an uncompressed 3D int16 NRRD");
    }
    const [nx, ny, nz] = fields.sizes.split(/\s+/).map(Number);
    const spacing = (fields["space directions"] || "").match(/\(([^)]*)\)/g) || [];
    const norms = spacing.map((v) => Math.hypot(...v.slice(1, -1).split(",").map(Number)));
    const count = nx * ny * nz;
    const raw = buffer.slice(end + 2, end + 2 + 2 * count);
    if (raw.byteLength !== 2 * count) throw new Error("the volume is shorter than its header says");
    let data = new Int16Array(raw);
    if (fields.endian === "big") {
      const view = new DataView(raw);
      data = Int16Array.from({ length: count }, (_, i) => view.getInt16(2 * i, false));
    }
    return { data, nx, ny, nz, sx: norms[0] || 1, sy: norms[1] || 1 };
  }

  // -- drawing: both images share one view (slice, zoom, pan, window) --------------------------
  function draw() {
    const v = state.view;
    for (const side of Object.keys(state.volumes)) {
      const volume = state.volumes[side];
      const canvas = $("view-" + side);
      const ratio = window.devicePixelRatio || 1;
      canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
      canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
      const { nx, ny } = volume;
      const slice = Math.min(v.slice, volume.nz - 1);
      const pixels = new ImageData(nx, ny);
      const low = v.level - v.width / 2;
      const offset = slice * nx * ny;
      for (let i = 0; i < nx * ny; i++) {
        const g = Math.max(0, Math.min(255, ((volume.data[offset + i] - low) / v.width) * 255));
        pixels.data[4 * i] = pixels.data[4 * i + 1] = pixels.data[4 * i + 2] = g;
        pixels.data[4 * i + 3] = 255;
      }
      const image = document.createElement("canvas");
      image.width = nx; image.height = ny;
      image.getContext("2d").putImageData(pixels, 0, 0);
      const context = canvas.getContext("2d");
      context.fillStyle = "#000";
      context.fillRect(0, 0, canvas.width, canvas.height);
      const fit = Math.min(canvas.width / (nx * volume.sx), canvas.height / (ny * volume.sy));
      const w = nx * volume.sx * fit * v.zoom, h = ny * volume.sy * fit * v.zoom;
      context.imageSmoothingEnabled = true;
      context.drawImage(image, (canvas.width - w) / 2 + v.panX * ratio,
                        (canvas.height - h) / 2 + v.panY * ratio, w, h);
    }
    const any = Object.values(state.volumes)[0];
    $("window-readout").textContent = `W ${Math.round(v.width)} L ${Math.round(v.level)}`;
    $("slice-readout").textContent = any ? `Slice ${Math.min(v.slice, any.nz - 1) + 1} / ${any.nz}` : "";
  }

  function setSlice(slice) {
    const any = Object.values(state.volumes)[0];
    if (!any) return;
    state.view.slice = Math.max(0, Math.min(any.nz - 1, slice));
    draw();
  }

  function setPreset(name) {
    const [width, level] = name === "study"
      ? [state.info.window.width, state.info.window.level] : PRESETS[name];
    Object.assign(state.view, { width, level, preset: name });
    draw();
  }

  function resetView() {
    const any = Object.values(state.volumes)[0];
    Object.assign(state.view, { zoom: 1, panX: 0, panY: 0, slice: any ? Math.floor(any.nz / 2) : 0 });
    setPreset("study");
  }

  function bindViews() {
    for (const side of ["A", "B"]) {
      const canvas = $("view-" + side);
      canvas.addEventListener("wheel", (event) => {
        event.preventDefault();
        if (event.ctrlKey) {
          state.view.zoom = Math.max(0.25, Math.min(8, state.view.zoom * (event.deltaY < 0 ? 1.1 : 1 / 1.1)));
          draw();
        } else {
          setSlice(state.view.slice + (event.deltaY > 0 ? 1 : -1));
        }
      }, { passive: false });
      canvas.addEventListener("contextmenu", (event) => event.preventDefault());
      canvas.addEventListener("pointerdown", (event) => {
        canvas.setPointerCapture(event.pointerId);
        const pan = event.button === 2 || event.shiftKey;
        let x = event.clientX, y = event.clientY;
        const move = (e) => {
          const dx = e.clientX - x, dy = e.clientY - y;
          x = e.clientX; y = e.clientY;
          if (pan) {
            state.view.panX += dx; state.view.panY += dy;
          } else {
            state.view.width = Math.max(1, state.view.width + 2 * dx);
            state.view.level += 2 * dy;
          }
          draw();
        };
        const up = () => {
          canvas.removeEventListener("pointermove", move);
          canvas.removeEventListener("pointerup", up);
        };
        canvas.addEventListener("pointermove", move);
        canvas.addEventListener("pointerup", up);
      });
    }
    for (const button of document.querySelectorAll("[data-preset]")) {
      button.addEventListener("click", () => setPreset(button.dataset.preset));
    }
    $("reset-view").addEventListener("click", resetView);
    window.addEventListener("resize", draw);
  }

  // -- the rating form -------------------------------------------------------------------------
  function buildForm(sides) {
    const form = $("scores");
    form.replaceChildren();
    state.rows = [];
    state.answers = Object.fromEntries(sides.map((side) => [side, {}]));
    state.choice = null;
    for (const criterion of state.info.criteria) {
      for (const side of sides) {
        const [low, high] = criterion.scale || [1, 5];
        const label = document.createElement("div");
        label.className = "row-label";
        label.textContent = `${criterion.question} (${side})`;
        label.title = Object.entries(criterion.anchors).map(([k, v]) => `${k} = ${v}`).join(", ");
        const controls = document.createElement("div");
        const row = { side, name: criterion.name, low, high, label, controls, inputs: [] };
        if (high - low <= 9) {
          for (let value = low; value <= high; value++) {
            const option = document.createElement("label");
            const input = document.createElement("input");
            input.type = "radio";
            input.name = `${side}:${criterion.name}`;
            input.value = String(value);
            input.addEventListener("change", () => answer(row, value));
            option.append(input, ` ${value}`);
            option.title = criterion.anchors[String(value)] || "";
            controls.append(option);
            row.inputs.push(input);
          }
        } else {
          const input = document.createElement("input");
          input.type = "range"; input.min = String(low); input.max = String(high);
          input.value = String(Math.round((low + high) / 2));
          input.setAttribute("aria-label", `${criterion.question} (${side})`);
          input.name = `${side}:${criterion.name}`;
          const output = document.createElement("output");
          output.textContent = "not rated";
          input.addEventListener("input", () => { output.textContent = input.value; answer(row, Number(input.value)); });
          controls.append(`${criterion.anchors[String(low)] || low} `, input,
                          ` ${criterion.anchors[String(high)] || high} `, output);
          row.inputs.push(input);
        }
        form.append(label, controls);
        state.rows.push(row);
      }
    }
    if (sides.length === 2) {
      const label = document.createElement("div");
      label.className = "row-label";
      label.textContent = "Better image";
      const controls = document.createElement("div");
      for (const side of sides) {
        const option = document.createElement("label");
        const input = document.createElement("input");
        input.type = "radio"; input.name = "choice"; input.value = side;
        input.addEventListener("change", () => { state.choice = side; checkComplete(); });
        option.append(input, ` ${side}`);
        controls.append(option);
      }
      form.append(label, controls);
    }
    setActive(0);
    checkComplete();
  }

  function answer(row, value) {
    state.answers[row.side][row.name] = value;
    checkComplete();
  }

  function setActive(index) {
    state.active = Math.max(0, Math.min(state.rows.length - 1, index));
    state.rows.forEach((row, k) => {
      row.label.classList.toggle("active", k === state.active);
      row.controls.classList.toggle("active", k === state.active);
    });
  }

  function complete() {
    const rated = state.rows.every((row) => state.answers[row.side][row.name] !== undefined);
    return rated && (Object.keys(state.answers).length === 1 || state.choice !== null);
  }

  function checkComplete() { $("submit").disabled = state.sending || !state.item || !complete(); }

  function rateActive(value) {
    const row = state.rows[state.active];
    if (!row || value < row.low || value > row.high || row.inputs.length === 1) return;
    row.inputs[value - row.low].checked = true;
    answer(row, value);
    setActive(state.active + 1);
  }

  function choose(side) {
    const input = document.querySelector(`input[name=choice][value=${side}]`);
    if (!input) return;
    input.checked = true;
    state.choice = side;
    checkComplete();
  }

  // -- the study flow ----------------------------------------------------------------------------
  function submissionId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function loadNext() {
    say("Loading the next item…");
    state.item = null; // nothing can be rated or sent until the next item is shown
    $("scores").replaceChildren();
    checkComplete();
    const item = await (await api("GET", `/study/${encodeURIComponent(state.study)}/readers/${encodeURIComponent(state.reader)}/next`)).json();
    if (item.finished) {
      $("progress").textContent = "";
      $("finished-text").textContent = `All ${item.total} items scored. Thank you.`;
      show("finished");
      say("");
      return;
    }
    const sides = Object.keys(item.volumes).sort();
    const loaded = await Promise.all(sides.map(async (side) =>
      parseNrrd(await (await api("GET", item.volumes[side])).arrayBuffer())));
    state.volumes = Object.fromEntries(sides.map((side, k) => [side, loaded[k]]));
    state.item = item;
    state.submissionId = submissionId(); // one per item: resending after an error is safe
    $("figure-B").hidden = sides.length === 1;
    show("reader");
    buildForm(sides);
    resetView();
    state.shownAt = performance.now();
    $("progress").textContent = `Item ${item.number} of ${item.total}`; // the item is ready
    say("");
  }

  async function submit() {
    if (!state.item || !complete() || state.sending) return;
    state.sending = true;
    checkComplete();
    const sides = Object.keys(state.answers);
    const body = {
      submission_id: state.submissionId, scores: state.answers,
      choice: sides.length === 2 ? state.choice : null,
      reading_seconds: Math.round((performance.now() - state.shownAt) / 10) / 100,
    };
    try {
      await api("POST", `/study/${encodeURIComponent(state.study)}/readers/${encodeURIComponent(state.reader)}/items/${encodeURIComponent(state.item.item)}`, body);
      state.sending = false;
      await loadNext();
    } catch (error) {
      state.sending = false;
      checkComplete();
      fail(error);
    }
  }

  function fail(error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      state.volumes = {};
      show("login");
      say(`This token is not accepted (${error.message}). Enter the reader token the study coordinator gave you.`);
      return;
    }
    say(`${error.message} — your scores are kept; press Submit to try again.`);
  }

  async function start() {
    state.token = takeToken();
    if (!state.token) {
      show("login");
      say("Enter your reader token.");
      return;
    }
    try {
      const studies = await (await api("GET", "/study/")).json();
      const mine = studies.find((s) => s.reader);
      if (!mine) {
        sessionStorage.removeItem(TOKEN_KEY);
        show("login");
        say("This token opens no reader study. Enter the reader token the study coordinator gave you.");
        return;
      }
      state.study = mine.study;
      state.reader = mine.reader;
      state.info = await (await api("POST", `/study/${encodeURIComponent(state.study)}/readers/${encodeURIComponent(state.reader)}/session`)).json();
      $("study-name").textContent = state.info.name;
      await loadNext();
    } catch (error) {
      fail(error);
    }
  }

  document.addEventListener("keydown", (event) => {
    if ($("reader").hidden || event.target.id === "token-input") return;
    const key = event.key;
    if (event.target.type === "range" && key.startsWith("Arrow")) return; // the slider's own
    if (key === "ArrowUp" || key === "ArrowDown") setSlice(state.view.slice + (key === "ArrowDown" ? 1 : -1));
    else if (key === "PageUp" || key === "PageDown") setSlice(state.view.slice + (key === "PageDown" ? 10 : -10));
    else if (key === "+" || key === "=") { state.view.zoom = Math.min(8, state.view.zoom * 1.1); draw(); }
    else if (key === "-") { state.view.zoom = Math.max(0.25, state.view.zoom / 1.1); draw(); }
    else if (key === "0") resetView();
    else if (key === "w" || key === "W") setPreset(PRESET_ORDER[(PRESET_ORDER.indexOf(state.view.preset) + 1) % PRESET_ORDER.length]);
    else if (key === "ArrowLeft" || key === "ArrowRight") setActive(state.active + (key === "ArrowRight" ? 1 : -1));
    else if (/^[1-9]$/.test(key)) rateActive(Number(key));
    else if (key === "a" || key === "A" || key === "b" || key === "B") choose(key.toUpperCase());
    else if (key === "Enter") submit();
    else return;
    event.preventDefault();
  });

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    $("token-input").value = "";
    if (token) { sessionStorage.setItem(TOKEN_KEY, token); start(); }
  });
  $("submit").addEventListener("click", submit);
  window.addEventListener("hashchange", start); // a new link opened in this tab
  bindViews();
  start();
})();
