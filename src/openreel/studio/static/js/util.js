// Small DOM and formatting helpers.

export const $ = (id) => document.getElementById(id);

/** el("div", {class: "x", onclick: fn}, child, "text") */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function show(node, visible = true) {
  node.hidden = !visible;
}

export function setText(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

export const ACTIVE = new Set(["QUEUED", "PROCESSING"]);
export const FINISHED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export function credits(n) {
  return `${n} credit${n === 1 ? "" : "s"}`;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

export function statusBadge(status) {
  return el("span", { class: `badge badge-${status.toLowerCase()}` }, status);
}

/** A readable sentence for an API error (402 and 503 get their own wording). */
export function describeError(err) {
  const body = err.body || {};
  if (err.status === 402 && body.creditsRequired !== undefined) {
    return (
      `Not enough credits: this needs ${credits(body.creditsRequired)}; ` +
      `you have ${body.creditsAvailable}.`
    );
  }
  if (err.status === 503) return `The video engine is unavailable right now: ${err.message}`;
  if (err.status === 0) return err.message;
  return err.message;
}
