// The task list: one page of GET /api/tasks, rows kept by task id and updated in place (a
// progress event touches only the cells that changed). Running tasks are followed over SSE; a
// poll of the page covers tasks without a live stream (too many, or reconnecting).
// Everything from the API is shown with textContent, never parsed as HTML.

import { api, ApiError, fileSize, hasToken, resolve, saveWithToken } from "./api.js";
import { follow } from "./stream.js";

// Browsers open at most 6 HTTP/1.1 connections per host; leave room for the page's own requests.
const MAX_STREAMS = 4;
const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// Only real changes touch the DOM: a 500-row page refreshed with the same data changes nothing.
function set(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function attr(element, name, value) {
  if (element.getAttribute(name) !== value) element.setAttribute(name, value);
}

class Row {
  constructor(template, list) {
    this.element = template.content.firstElementChild.cloneNode(true);
    this.list = list;
    this.stop = null;
    this.connects = 0;
    const find = (selector) => this.element.querySelector(selector);
    Object.assign(this, {
      title: find(".title"),
      owner: find(".owner"),
      status: find(".status"),
      url: find(".url"),
      progress: find("progress"),
      percent: find(".percent"),
      bytes: find(".bytes"),
      speed: find(".speed"),
      eta: find(".eta"),
      stream: find(".stream"),
      message: find(".message"),
      video: find(".video"),
      audio: find(".audio"),
      extras: find(".extras"),
      remove: find(".remove"),
      items: find(".items"),
      itemSummary: find(".items summary"),
      itemList: find(".item-list"),
    });
    this.itemRows = new Map();
    this.items.addEventListener("toggle", () => this.items.open && this.loadItems());
    this.extrasShown = "";
    for (const link of [this.video, this.audio]) link.addEventListener("click", (event) => this.save(event, link));
    this.remove.addEventListener("click", () => this.delete());
  }

  get active() {
    return !this.task.completed_at;
  }

  update(task) {
    const first = !this.task;
    this.task = task;
    const element = this.element;
    if (first) element.dataset.taskId = task.task_id;
    attr(element, "data-status", task.status);
    const title = task.video_info?.title || task.playlist?.title || task.url;
    set(this.title, title);
    set(this.url, title === task.url ? "" : task.url);
    // An admin sees every user's tasks: whose each one is, but for its own.
    const viewer = this.list.viewer;
    set(this.owner, viewer?.role === "admin" && task.owner !== viewer.name ? `by ${task.owner}` : "");
    set(this.status, task.status);
    const progress = task.progress ?? 0;
    if (this.progress.value !== progress) this.progress.value = progress;
    attr(this.progress, "aria-label", `Progress of ${title}`);
    set(this.percent, `${progress.toFixed(1)} %`);
    const done = task.downloaded_bytes ?? null;
    const total = task.total_bytes ?? null;
    set(this.bytes, total ? `${bytes(done ?? 0)} of ${bytes(total)}` : bytes(done));
    set(this.speed, this.active && task.speed ? `${bytes(task.speed)}/s` : "");
    set(this.eta, this.active && task.eta !== null && task.eta !== undefined ? `ETA ${duration(task.eta)}` : "");
    // The message says more than the status only sometimes ("transient error, retry 1 of 2 ...").
    set(this.message, task.error || (task.message === task.status ? "" : task.message) || "");
    if (this.message.classList.contains("failed") !== Boolean(task.error)) this.message.classList.toggle("failed");
    this.link(this.video, "Video", task.files.video);
    this.link(this.audio, "Audio", task.files.audio);
    this.showExtras(task.files.items.filter((item) => item.kind === "subtitles" || item.kind === "thumbnail"));
    set(this.remove, this.active ? "Cancel" : "Delete");
    const removable = this.active || task.files.items.length > 0 || Boolean(task.files.video || task.files.audio);
    if (this.remove.hidden === removable) this.remove.hidden = !removable;
    attr(this.remove, "aria-label", `${this.active ? "Cancel" : "Delete"} ${title}`);
    this.showPlaylist(task.playlist);
  }

  // A playlist: its items, listed when the row is opened and refreshed while it is open.
  showPlaylist(playlist) {
    if (this.items.hidden !== !playlist) this.items.hidden = !playlist;
    if (!playlist) return;
    const of = playlist.total && playlist.total !== playlist.items ? ` (of ${playlist.total} in the playlist)` : "";
    set(this.itemSummary, `${playlist.items} items${of}`);
    if (this.items.open) this.itemsChanged();
  }

  itemsChanged() {
    clearTimeout(this.itemsReload);
    this.itemsReload = setTimeout(() => this.loadItems(), 300);
  }

  async loadItems() {
    try {
      const page = await api(`/api/tasks?${new URLSearchParams({ parent_id: this.task.task_id, limit: 500 })}`);
      const rows = page.tasks.map((item) => this.itemRow(item));
      this.itemList.replaceChildren(...rows);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) set(this.message, `Items: ${error.message}`);
    }
  }

  itemRow(item) {
    let row = this.itemRows.get(item.task_id);
    if (!row) {
      row = this.list.itemTemplate.content.firstElementChild.cloneNode(true);
      row.dataset.taskId = item.task_id;
      for (const anchor of row.querySelectorAll("a")) anchor.addEventListener("click", (e) => this.save(e, anchor));
      this.itemRows.set(item.task_id, row);
    }
    attr(row, "data-status", item.status);
    set(row.querySelector(".item-title"), item.video_info?.title || item.url);
    set(row.querySelector(".status"), item.error ? `${item.status}: ${item.error}` : item.status);
    set(row.querySelector(".percent"), `${(item.progress ?? 0).toFixed(1)} %`);
    for (const kind of ["video", "audio"]) {
      const anchor = row.querySelector(`.${kind}`);
      const url = item.files[kind];
      if (anchor.hidden !== !url) anchor.hidden = !url;
      if (url && anchor.getAttribute("href") !== url) anchor.href = url;
    }
    return row;
  }

  link(anchor, label, url) {
    if (anchor.hidden !== !url) anchor.hidden = !url;
    if (!url) return;
    if (anchor.getAttribute("href") !== url) {
      anchor.href = url;
      set(anchor, label);
      this.list.sizes.observe(anchor);
    }
  }

  // Subtitles and the thumbnail: a link each, labelled with what the listing says (kind, language, size).
  showExtras(items) {
    const shown = items.map((item) => item.url).join(" ");
    if (shown === this.extrasShown) return;
    this.extrasShown = shown;
    const links = items.map((item) => {
      const anchor = document.createElement("a");
      anchor.className = `download ${item.kind}`;
      anchor.href = item.url;
      anchor.download = "";
      const what = item.kind === "subtitles" ? `Subtitles ${item.language ?? ""}`.trim() : "Thumbnail";
      anchor.textContent = `${what} (${bytes(item.size)})`;
      anchor.addEventListener("click", (event) => this.save(event, anchor));
      return anchor;
    });
    this.extras.replaceChildren(...links);
  }

  async showSize(anchor) {
    const size = await fileSize(anchor.getAttribute("href"));
    if (size) set(anchor, `${anchor === this.video ? "Video" : "Audio"} (${bytes(size)})`);
  }

  async save(event, anchor) {
    // Without a token the link downloads by itself; with one, the file is fetched with the header.
    if (!hasToken()) return;
    event.preventDefault();
    try {
      await saveWithToken(anchor.href);
    } catch (error) {
      set(this.message, error.message);
    }
  }

  async delete() {
    const all = this.task.playlist ? " all its items and" : "";
    const what = this.active ? `Cancel this download,${all} and delete its files?` : `Delete${all} the files of this task?`;
    if (!window.confirm(`${what}\n\n${this.title.textContent}`)) return;
    try {
      this.update(await api(`/api/tasks/${this.task.task_id}`, { method: "DELETE" }));
      this.list.changed();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      set(this.message, error.message);
    }
  }

  setStream(state) {
    if (state === "live") this.connects += 1;
    this.element.dataset.stream = state;
    this.element.dataset.connects = this.connects;
    set(this.stream, state === "reconnecting" && this.active ? "reconnecting…" : "");
  }

  follow() {
    this.stop = follow(this.task.task_id, {
      onTask: (task, kind) => {
        if (kind === "item") {
          if (this.items.open) this.itemsChanged();
          return;
        }
        this.update(task);
        if (kind === "status") this.list.changed();
      },
      onState: (state) => {
        this.setStream(state);
        if (state === "ended" || state === "refused") {
          this.stop = null;
          this.refused = state === "refused";
          this.list.followMore();
        }
      },
    });
  }

  close() {
    this.stop?.();
    this.stop = null;
    this.list.sizes.unobserve(this.video);
    this.list.sizes.unobserve(this.audio);
  }
}

export class TaskList {
  constructor(openapi) {
    const parameters = openapi.paths["/api/tasks"].get.parameters.map((p) => resolve(openapi, p));
    const schema = (name) => resolve(openapi, parameters.find((parameter) => parameter.name === name).schema);
    this.statuses = schema("status").enum;
    this.state = { status: "", limit: 50, offset: 0 };
    this.viewer = null; // who is signed in (GET /api/me)
    this.rows = new Map();
    this.template = $("task-row");
    this.itemTemplate = $("item-row");
    this.list = $("task-list");
    this.rendered = false;
    // File sizes are asked for only when a link scrolls into view.
    this.sizes = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        this.sizes.unobserve(entry.target);
        const row = this.rows.get(entry.target.closest(".task").dataset.taskId);
        row?.showSize(entry.target);
      }
    });

    const sizes = [...new Set([25, this.state.limit, 100, schema("limit").maximum])].sort((a, b) => a - b);
    for (const size of sizes) $("page-size").append(new Option(String(size), size, false, size === this.state.limit));
    $("page-size").addEventListener("change", (event) => this.go({ limit: Number(event.target.value), offset: 0 }));
    $("newer").addEventListener("click", () => this.go({ offset: Math.max(0, this.state.offset - this.state.limit) }));
    $("older").addEventListener("click", () => this.go({ offset: this.state.offset + this.state.limit }));
    this.filters = new Map();
    for (const status of ["", ...this.statuses]) {
      const input = document.createElement("input");
      Object.assign(input, { type: "radio", name: "status", value: status, id: `filter-${status || "all"}` });
      input.checked = status === this.state.status;
      input.addEventListener("change", () => this.go({ status, offset: 0 }));
      const label = document.createElement("label");
      label.htmlFor = input.id;
      const count = document.createElement("span");
      count.className = "count";
      label.append(status || "all", " ", count);
      $("filter").append(input, label);
      this.filters.set(status, count);
    }
    setInterval(() => this.poll(), POLL_MS);
    // Back to the tab: counts and states may have moved on meanwhile.
    document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && this.load());
  }

  // After a new token: follow again the streams the old one could not open.
  resume() {
    for (const row of this.rows.values()) row.refused = false;
    this.load();
  }

  // A task was submitted: the first page of all tasks, where it is.
  showNew() {
    $("filter-all").checked = true;
    this.go({ status: "", offset: 0 });
  }

  go(change) {
    Object.assign(this.state, change);
    this.load();
  }

  async load() {
    const { status, limit, offset } = this.state;
    const query = new URLSearchParams({ limit, offset });
    if (status) query.set("status", status);
    try {
      this.render(await api(`/api/tasks?${query}`));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) set($("notice"), `Task list: ${error.message}`);
    }
  }

  render(page) {
    set($("notice"), "");
    for (const [status, count] of this.filters) {
      set(count, String(status ? (page.counts[status] ?? 0) : Object.values(page.counts).reduce((a, b) => a + b, 0)));
    }
    const seen = new Set();
    let previous = null;
    for (const task of page.tasks) {
      let row = this.rows.get(task.task_id);
      if (!row) {
        row = new Row(this.template, this);
        this.rows.set(task.task_id, row);
      }
      // Only newer states: a stream's event may be newer than a page fetched at the same time.
      // (ISO 8601 times in UTC compare as strings.)
      if (!row.task || task.updated_at > row.task.updated_at) row.update(task);
      seen.add(task.task_id);
      const place = previous ? previous.element.nextElementSibling : this.list.firstElementChild;
      if (place !== row.element) this.list.insertBefore(row.element, place);
      previous = row;
    }
    for (const [taskId, row] of this.rows) {
      if (!seen.has(taskId)) {
        row.close();
        row.element.remove();
        this.rows.delete(taskId);
      }
    }
    $("empty").hidden = page.tasks.length > 0;
    const last = page.offset + page.tasks.length;
    set($("range"), page.tasks.length ? `${page.offset + 1}–${last} of ${page.total}` : "");
    $("newer").disabled = page.offset === 0;
    $("older").disabled = last >= page.total;
    this.followMore();
    if (!this.rendered) {
      this.rendered = true;
      // Page load to interactive, for bench/ui_bench.py and the browser tests.
      performance.mark("tasks-rendered");
      document.documentElement.dataset.ready = "true";
    }
  }

  followMore() {
    let streams = [...this.rows.values()].filter((row) => row.stop).length;
    for (const row of this.rows.values()) {
      if (streams >= MAX_STREAMS) break;
      if (row.active && !row.stop && !row.refused) {
        row.follow();
        streams += 1;
      }
    }
  }

  // A status changed: counts and the filtered page change too (coalesced).
  changed() {
    clearTimeout(this.reload);
    this.reload = setTimeout(() => this.load(), 300);
  }

  poll() {
    const uncovered = [...this.rows.values()].some((row) => row.active && row.element.dataset.stream !== "live");
    if (uncovered && document.visibilityState === "visible") this.load();
  }
}
