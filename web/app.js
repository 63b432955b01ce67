// The page: wires the views to auth.js and api.js. Everything shown comes from
// the services; the token's permissions only decide which buttons to offer
// (the services enforce them regardless).
import * as auth from "./auth.js";
import { users, orders, billing, list, describe } from "./api.js";
import * as live from "./live.js";
import * as dpop from "./dpop.js";

const $ = (id) => document.getElementById(id);

// h builds elements without innerHTML, so nothing a service returns is ever
// parsed as markup.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function money(cents, currency = "EUR") {
  if (typeof cents !== "number") return "–";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

function badge(status, testid) {
  return h("span", { class: `badge status-${status || "none"}`, "data-status": status || "", "data-testid": testid }, status || "–");
}

// ---- messages -------------------------------------------------------------

// orderId names the order a notice is about, so a live update of that order
// can keep the notice true (followNotice).
function showNotice({ kind = "info", title, detail = "", fields = [], login = false, orderId = "" }) {
  const box = $("notice");
  box.dataset.kind = kind;
  box.dataset.orderId = orderId;
  box.setAttribute("role", kind === "info" || kind === "success" ? "status" : "alert");
  $("notice-title").textContent = title;
  $("notice-detail").textContent = detail;
  const ul = $("notice-fields");
  ul.replaceChildren(...fields.map((f) => h("li", {}, f.field ? h("code", {}, f.field) : null, f.field ? ": " : "", f.message)));
  if (login) {
    $("notice-detail").append(" ", h("button", { type: "button", class: "link", onclick: () => auth.login() }, "Log in again"));
  }
  box.hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

function fail(err) {
  showNotice(describe(err));
}

// markInvalid flags the inputs a 422 named (aria-invalid, so screen readers
// announce it too) and clears the flags of the others in the same form.
function markInvalid(form, err, inputFor) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  let first = null;
  for (const f of err?.fields || []) {
    const el = inputFor(f.field);
    if (!el) continue;
    el.setAttribute("aria-invalid", "true");
    first ??= el;
  }
  first?.focus();
}

function ok(title, detail = "", orderId = "") {
  showNotice({ kind: "success", title, detail, orderId });
}

// followNotice replaces a success notice about orderId ("Invoice ready: …
// is open", "… follows in a moment") with what a live update says now, so
// that it never contradicts the badges below it.
function followNotice(orderId, title, detail) {
  const box = $("notice");
  if (box.hidden || box.dataset.kind !== "success" || !orderId || box.dataset.orderId !== orderId) return;
  ok(title, detail, orderId);
}

// busy disables a button while its action runs, so a double click cannot
// place two orders or pay twice.
async function busy(button, fn) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// ---- session --------------------------------------------------------------

let me = null;
let currentView = "shop";

function can(permission) {
  return auth.permissions().has(permission);
}

function renderSession() {
  const s = auth.current();
  const signedIn = Boolean(s);
  $("loading").hidden = true;
  $("signed-out").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  $("login").hidden = signedIn;
  $("logout").hidden = !signedIn;
  $("refresh").hidden = !signedIn || !auth.canRefresh();
  $("session-user").hidden = !signedIn;
  $("session-roles").hidden = !signedIn;
  if (!signedIn) {
    me = null;
    return;
  }
  $("session-user").textContent = me?.email || s.profile?.email || s.claims.sub || "";
  $("session-roles").textContent = auth.roles().join(", ");
  $("tab-admin").hidden = !(can("read:users") || can("read:all-orders"));
  const expires = new Date(s.expiresAt).toLocaleTimeString();
  const refreshed = s.refreshCount ? `; refreshed ${s.refreshCount}× (last ${new Date(s.refreshedAt).toLocaleTimeString()})` : "";
  $("profile-session").textContent = `access token valid until ${expires}${auth.canRefresh() ? ", renewed automatically" : ", no refresh token"}${refreshed}`;
  $("profile-session").dataset.refreshCount = String(s.refreshCount || 0);
}

// resetViews drops everything the previous user's session showed, so that
// the next person to log in at this tab sees none of it.
function resetViews() {
  me = null;
  adminUser = null;
  detail = { order: null, invoice: null };
  myOrders.clear();
  awaitingInvoice = null;
  renderDetail();
  for (const id of ["orders-list", "users-list", "admin-orders", "catalog", "detail-order-items"]) $(id).replaceChildren();
  for (const form of document.querySelectorAll("form")) form.reset();
  $("lookup-result").textContent = "";
  delete $("lookup-result").dataset.status;
  $("admin-user").hidden = true;
  currentView = "shop";
}

auth.onChange((session, reason, err) => {
  if (session) startLive();
  else {
    stopLive();
    resetViews();
  }
  renderSession();
  if (!session && reason === "refresh_failed") {
    showNotice({ ...describe(err), title: "Your session has ended", login: true });
  }
});

// ---- tabs -----------------------------------------------------------------

const loaders = {
  shop: loadCatalog,
  orders: loadMyOrders,
  profile: loadProfile,
  admin: loadUsers,
};

function show(view) {
  currentView = view;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`view-${tab.dataset.view}`).hidden = !selected;
  }
  document.body.dataset.view = view;
  return loaders[view]().catch(fail);
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      hideNotice();
      show(tab.dataset.view);
    });
    // Arrow keys move between tabs, as the WAI-ARIA tabs pattern expects.
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const visible = tabs.filter((t) => !t.hidden);
      const i = visible.indexOf(tab) + (e.key === "ArrowRight" ? 1 : -1);
      const next = visible[(i + visible.length) % visible.length];
      next.focus();
      show(next.dataset.view);
    });
  }
}

// ---- shop -----------------------------------------------------------------

let catalog = [];

async function loadCatalog() {
  // Set before the fetch, so "loaded" always means this call's rows.
  $("catalog").dataset.state = "loading";
  catalog = list(await orders.catalog(), "products");
  $("catalog").replaceChildren(
    ...catalog.map((p) =>
      h(
        "tr",
        { "data-sku": p.sku },
        h("td", {}, p.name),
        h("td", {}, h("code", {}, p.sku)),
        h("td", { class: "num" }, money(p.unit_price_cents, p.currency)),
        h(
          "td",
          { class: "num" },
          h("label", { class: "sr-only", for: `qty-${p.sku}` }, `Quantity of ${p.name}`),
          h("input", { id: `qty-${p.sku}`, "data-testid": `qty-${p.sku}`, "data-sku": p.sku, type: "number", min: 0, max: 100, step: 1, value: 0, inputmode: "numeric", class: "qty", oninput: updateTotal }),
        ),
      ),
    ),
  );
  $("catalog").dataset.state = "loaded";
  updateTotal();
}

function cartItems() {
  return [...document.querySelectorAll("#catalog input.qty")]
    .map((i) => ({ sku: i.dataset.sku, quantity: Number(i.value) }))
    .filter((i) => i.quantity !== 0);
}

function updateTotal() {
  let total = 0;
  let currency = "EUR";
  for (const item of cartItems()) {
    const p = catalog.find((c) => c.sku === item.sku);
    if (p && Number.isFinite(item.quantity)) {
      total += p.unit_price_cents * item.quantity;
      currency = p.currency;
    }
  }
  $("cart-total").textContent = money(total, currency);
}

// Each submitted cart gets one idempotency key; a retry of the same cart
// (double click, flaky network) cannot create a second order.
let pendingKey = null;
let pendingCart = "";

async function placeOrder(e) {
  e.preventDefault();
  hideNotice();
  const items = cartItems();
  if (items.length === 0) {
    showNotice({ kind: "warning", title: "Your cart is empty", detail: "Set a quantity for at least one product." });
    return;
  }
  const cart = JSON.stringify(items);
  if (cart !== pendingCart) {
    pendingCart = cart;
    pendingKey = crypto.randomUUID();
  }
  await busy($("place-order"), async () => {
    try {
      const order = await orders.create(items, pendingKey);
      pendingCart = "";
      for (const input of document.querySelectorAll("#catalog input.qty")) input.value = 0;
      updateTotal();
      ok("Order placed", `Order ${order.id}: ${money(order.total_cents, order.currency)}. Waiting for its invoice…`, order.id);
      markInvalid($("order-form"), null, () => null);
      await show("orders");
      await openOrder(order.id, { order, awaitInvoice: true });
    } catch (err) {
      fail(err);
      // "items[1].quantity" names the second line sent: find its input.
      markInvalid($("order-form"), err, (field) => {
        const m = /^items\[(\d+)\]/.exec(field);
        const sku = m ? items[Number(m[1])]?.sku : null;
        return sku ? document.getElementById(`qty-${sku}`) : null;
      });
    }
  });
}

// ---- orders ---------------------------------------------------------------

function orderRow(order, invoice, { onOpen, admin = false }) {
  const actions = [h("button", { type: "button", class: "secondary", "data-action": "open", onclick: () => onOpen(order.id) }, "Details")];
  if (!admin && invoice?.status === "open" && can("pay:invoices")) {
    actions.push(h("button", { type: "button", "data-action": "pay", onclick: (e) => payInvoice(invoice, order.id, e.currentTarget) }, "Pay"));
  }
  if (admin && invoice?.status === "paid" && can("refund:invoices")) {
    actions.push(h("button", { type: "button", class: "danger", "data-action": "refund", onclick: (e) => refundInvoice(invoice, order.id, e.currentTarget) }, "Refund"));
  }
  return h(
    "tr",
    { "data-order-id": order.id, "data-status": order.status },
    h("td", {}, h("code", {}, order.id)),
    h("td", {}, when(order.created_at)),
    h("td", { class: "num" }, money(order.total_cents, order.currency)),
    h("td", {}, badge(order.status, "order-status")),
    h("td", {}, invoice ? badge(invoice.status, "invoice-status") : h("span", { class: "hint" }, "none yet")),
    h("td", { class: "actions" }, actions),
  );
}

function byOrder(invoices) {
  const m = new Map();
  for (const inv of invoices) m.set(inv.order_id, inv);
  return m;
}

function newestFirst(a, b) {
  return String(b.created_at || "").localeCompare(String(a.created_at || ""));
}

// myOrders is what the orders list shows (order id → {order, invoice}), so a
// live update can redraw one row.
const myOrders = new Map();

function myOrderRow(id) {
  const { order, invoice } = myOrders.get(id);
  return orderRow(order, invoice, { onOpen: (id) => openOrder(id) });
}

async function loadMyOrders() {
  $("orders-list").dataset.state = "loading";
  const [os, is] = await Promise.all([orders.mine(), billing.mine()]);
  const invoices = byOrder(list(is, "invoices"));
  const mine = list(os, "orders").sort(newestFirst);
  myOrders.clear();
  for (const o of mine) myOrders.set(o.id, { order: o, invoice: invoices.get(o.id) || null });
  $("orders-list").replaceChildren(...mine.map((o) => myOrderRow(o.id)));
  $("orders-empty").hidden = mine.length > 0;
  $("orders-list").dataset.state = "loaded";
}

// detail is the order shown in the detail card.
let detail = { order: null, invoice: null };

function renderDetail() {
  const { order, invoice } = detail;
  const card = $("order-detail");
  card.hidden = !order;
  if (!order) return;
  card.dataset.orderId = order.id;
  $("detail-order-id").textContent = order.id;
  const status = $("detail-order-status");
  status.textContent = order.status;
  status.dataset.status = order.status;
  status.className = `badge status-${order.status}`;
  $("detail-order-total").textContent = money(order.total_cents, order.currency);
  $("detail-order-items").replaceChildren(...(order.items || []).map((i) => h("li", {}, `${i.quantity} × ${i.sku} (${money(i.unit_price_cents, order.currency)}) = ${money(i.line_total_cents, order.currency)}`)));
  const a = order.shipping_address;
  $("detail-order-address").textContent = a && (a.line1 || a.city) ? [a.line1, [a.postal_code, a.city].filter(Boolean).join(" "), a.country].filter(Boolean).join(", ") : "–";
  const inv = $("detail-invoice-status");
  inv.textContent = invoice ? `${invoice.status} · ${money(invoice.amount_cents, invoice.currency)}` : "waiting…";
  inv.dataset.status = invoice?.status || "";
  inv.className = `badge status-${invoice?.status || "none"}`;
  $("detail-invoice-id").textContent = invoice?.id || "";
  const own = me && order.user_id === me.user_id;
  $("pay-invoice").hidden = !(own && invoice?.status === "open" && can("pay:invoices"));
  $("cancel-order").hidden = !(own && order.status === "pending" && can("cancel:orders"));
  $("refund-invoice").hidden = !(invoice?.status === "paid" && can("refund:invoices"));
}

async function fetchInvoice(order) {
  const owner = me && order.user_id !== me.user_id ? order.user_id : "";
  return list(await billing.forOrder(order.id, owner), "invoices").find((i) => i.order_id === order.id) || null;
}

// updateMyOrder applies change({order, invoice}) to one row of the orders
// list and redraws it, if the list shows that order.
function updateMyOrder(id, change) {
  const entry = myOrders.get(id);
  const row = $("orders-list").querySelector(`tr[data-order-id="${CSS.escape(id)}"]`);
  if (!entry || !row) return;
  change(entry);
  row.replaceWith(myOrderRow(id));
}

// withLiveStatus keeps the status a live update showed while invoice was
// being read: the update is at least as new as the read.
function withLiveStatus(invoice, shown) {
  return invoice && shown?.id === invoice.id ? { ...invoice, status: shown.status } : invoice || shown;
}

// awaitingInvoice is the order just placed: its invoice comes from billing,
// through the order event, a moment later, and is announced when it does.
let awaitingInvoice = null;

function invoiceArrived(invoice) {
  if (awaitingInvoice !== invoice.order_id) return;
  awaitingInvoice = null;
  ok("Invoice ready", `Invoice ${invoice.id} is ${invoice.status}.`, invoice.order_id);
}

async function openOrder(id, { order = null, awaitInvoice = false } = {}) {
  const o = order || (await orders.get(id));
  detail = { order: o, invoice: null };
  if (awaitInvoice) awaitingInvoice = o.id;
  renderDetail();
  $("order-detail").scrollIntoView({ block: "nearest" });
  const invoice = await fetchInvoice(o);
  if (detail.order?.id !== o.id) return; // another order was opened meanwhile
  detail.invoice = withLiveStatus(invoice, detail.invoice);
  renderDetail();
  // The list may have been read before billing issued the invoice.
  if (detail.invoice) updateMyOrder(o.id, (entry) => (entry.invoice ??= detail.invoice));
  if (!awaitInvoice) return;
  if (detail.invoice) invoiceArrived(detail.invoice);
  else if (!liveUp()) showNotice({ kind: "warning", title: "No invoice yet", detail: "Billing issues it in a moment; live updates are off, so use Reload to see it." });
}

async function payInvoice(invoice, orderId, button) {
  hideNotice();
  await busy(button, async () => {
    try {
      const paid = await billing.pay(invoice.id);
      const shown = paid?.id ? paid : { ...invoice, status: "paid" };
      if (detail.order?.id === orderId) detail.invoice = shown;
      renderDetail();
      updateMyOrder(orderId, (entry) => (entry.invoice = shown));
      // The order follows its invoice through billing's event; the live
      // update shows it.
      ok("Invoice paid", liveUp() ? `Order ${orderId} follows in a moment.` : `Order ${orderId} follows in a moment; live updates are off, so use Reload to see it.`, orderId);
    } catch (err) {
      fail(err);
      if (detail.order?.id === orderId) await reloadDetail().catch(() => {});
    }
  });
}

// refundInvoice is the support view's: live updates carry only the signed-in
// user's own orders, so the refunded customer's order is read again on request.
async function refundInvoice(invoice, orderId, button) {
  hideNotice();
  await busy(button, async () => {
    try {
      const refunded = await billing.refund(invoice.id);
      if (detail.order?.id === orderId) {
        detail.invoice = refunded?.id ? refunded : { ...invoice, status: "refunded" };
        renderDetail();
      }
      ok("Invoice refunded", `Order ${orderId} follows its invoice in a moment; reload the user's orders to see it.`);
      if (adminUser) await loadAdminOrders(adminUser);
    } catch (err) {
      fail(err);
    }
  });
}

async function cancelOrder(button) {
  const id = detail.order?.id;
  if (!id) return;
  hideNotice();
  await busy(button, async () => {
    try {
      await orders.cancel(id);
      await reloadDetail();
      ok("Order cancelled", `Order ${id} is cancelled; its invoice is void.`, id);
      await loadMyOrders();
    } catch (err) {
      fail(err);
    }
  });
}

async function reloadDetail() {
  if (!detail.order) return;
  const order = await orders.get(detail.order.id);
  detail = { order, invoice: await fetchInvoice(order) };
  renderDetail();
}

async function lookup(e) {
  e.preventDefault();
  hideNotice();
  const id = $("lookup-id").value.trim();
  const out = $("lookup-result");
  out.textContent = "";
  delete out.dataset.status;
  if (!id) return;
  try {
    await openOrder(id);
    out.textContent = "";
    out.dataset.status = "200";
  } catch (err) {
    const d = describe(err);
    detail = { order: null, invoice: null };
    renderDetail();
    out.dataset.status = String(err.status ?? "");
    out.textContent = err.status === 404 ? `Order ${id} was not found: it does not exist, or it is not yours (404).` : `${d.title}: ${d.detail}`;
    fail(err);
  }
}

// ---- profile --------------------------------------------------------------

async function loadProfile() {
  me = await users.me();
  $("profile-email").textContent = me.email || "";
  $("profile-id").textContent = me.user_id || "";
  $("profile-roles").textContent = (me.roles || []).join(", ") || "–";
  $("profile-name").value = me.name || "";
  const a = me.shipping_address || {};
  $("addr-line1").value = a.line1 || "";
  $("addr-city").value = a.city || "";
  $("addr-postal").value = a.postal_code || "";
  $("addr-country").value = a.country || "";
  renderSession();
}

async function saveProfile(e) {
  e.preventDefault();
  hideNotice();
  const address = {
    line1: $("addr-line1").value.trim(),
    city: $("addr-city").value.trim(),
    postal_code: $("addr-postal").value.trim(),
    country: $("addr-country").value.trim().toUpperCase(),
  };
  // An untouched, empty address is left alone rather than sent as blanks;
  // a partly filled one is sent so the service can say what is missing.
  const patch = { name: $("profile-name").value.trim() };
  if (Object.values(address).some(Boolean)) patch.shipping_address = address;
  await busy($("profile-save"), async () => {
    try {
      await users.updateMe(patch);
      markInvalid($("profile-form"), null, () => null);
      await loadProfile();
      ok("Profile saved");
    } catch (err) {
      fail(err);
      // "shipping_address.postal_code" is the input named postal_code.
      markInvalid($("profile-form"), err, (field) => $("profile-form").querySelector(`[name="${CSS.escape(field.split(".").pop())}"]`));
    }
  });
}

// ---- support / admin ------------------------------------------------------

let adminUser = null;

async function loadUsers() {
  if (!can("read:users")) {
    $("users-list").replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "hint" }, "Listing users needs read:users; enter a user id below.")));
    return;
  }
  $("users-list").dataset.state = "loading";
  const all = list(await users.list(0, 100), "users");
  $("users-list").replaceChildren(
    ...all.map((u) => {
      const actions = [h("button", { type: "button", class: "secondary", "data-action": "orders", onclick: () => loadAdminOrders(u).catch(fail) }, "Orders")];
      if (can("block:users") && u.user_id !== me?.user_id) {
        actions.push(
          u.blocked
            ? h("button", { type: "button", "data-action": "unblock", onclick: (e) => setBlocked(u, false, e.currentTarget) }, "Unblock")
            : h("button", { type: "button", class: "danger", "data-action": "block", onclick: (e) => setBlocked(u, true, e.currentTarget) }, "Block"),
        );
      }
      return h(
        "tr",
        { "data-user-id": u.user_id, "data-email": u.email || "", "data-blocked": String(Boolean(u.blocked)) },
        h("td", {}, u.email || "–"),
        h("td", {}, h("code", {}, u.user_id)),
        h("td", {}, badge(u.blocked ? "blocked" : "active", "user-status")),
        h("td", { class: "actions" }, actions),
      );
    }),
  );
  $("users-list").dataset.state = "loaded";
}

async function setBlocked(user, blocked, button) {
  hideNotice();
  if (blocked && !window.confirm(`Block ${user.email || user.user_id}? Their current tokens stop working and their pending orders are cancelled.`)) return;
  await busy(button, async () => {
    try {
      await (blocked ? users.block(user.user_id) : users.unblock(user.user_id));
      ok(blocked ? "User blocked" : "User unblocked", `${user.email || user.user_id} is now ${blocked ? "blocked" : "active"}.`);
      await loadUsers();
    } catch (err) {
      fail(err);
    }
  });
}

async function loadAdminOrders(user) {
  adminUser = user;
  $("admin-user").hidden = false;
  $("admin-user-label").textContent = user.email || user.user_id;
  $("admin-user").dataset.userId = user.user_id;
  $("admin-orders").dataset.state = "loading";
  const [os, is] = await Promise.all([orders.ofUser(user.user_id), can("read:all-invoices") ? billing.ofUser(user.user_id) : Promise.resolve([])]);
  const invoices = byOrder(list(is, "invoices"));
  const all = list(os, "orders").sort(newestFirst);
  $("admin-orders").replaceChildren(
    ...all.map((o) =>
      orderRow(o, invoices.get(o.id), {
        admin: true,
        onOpen: async (id) => {
          await show("orders");
          await openOrder(id).catch(fail);
        },
      }),
    ),
  );
  $("admin-orders-empty").hidden = all.length > 0;
  $("admin-orders").dataset.state = "loaded";
}

// ---- live updates ---------------------------------------------------------

let liveConn = null;

function liveUp() {
  return liveConn?.state === "connected";
}

// startLive opens the session's live connection. A refreshed token is used
// from the next reconnect on: the server drops the connection when the token
// it was opened with expires.
function startLive() {
  const claims = auth.current().claims;
  if (liveConn || live.subjects(claims).length === 0) return;
  let wasConnected = false;
  liveConn = live.start({
    claims,
    getToken: () => auth.current()?.accessToken || "",
    proveConnect: (info, token) =>
      auth.current()?.tokenType === "DPoP" && auth.current()?.accessToken === token
        ? dpop.proof({ ...live.connectProof, accessToken: token, nonce: info.nonce || "" })
        : "",
    onUpdate: applyUpdate,
    onState: (state, err) => {
      renderLive(state, err);
      if (err || state !== "connected") return;
      // Updates published while the connection was down were missed.
      if (wasConnected) refreshOrders().catch(fail);
      wasConnected = true;
    },
  });
}

function stopLive() {
  liveConn?.close();
  liveConn = null;
  renderLive("closed", null);
}

// applyUpdate shows a live status change wherever the order or invoice is
// on screen. A new invoice of the open order is read once for its amount.
function applyUpdate(u) {
  if (u.kind === "order") {
    const was = detail.order?.id === u.id ? detail.order.status : myOrders.get(u.id)?.order.status;
    if (was !== u.status) followNotice(u.id, `Order ${u.status}`, `Order ${u.id} is ${u.status}.`);
    updateMyOrder(u.id, (entry) => (entry.order = { ...entry.order, status: u.status }));
    if (detail.order?.id === u.id) {
      detail.order = { ...detail.order, status: u.status };
      renderDetail();
    }
    return;
  }
  const shown = [detail.invoice, myOrders.get(u.order_id)?.invoice].find((invoice) => invoice?.id === u.id);
  if (shown?.status !== u.status) followNotice(u.order_id, `Invoice ${u.status}`, `Invoice ${u.id} is ${u.status}.`);
  const known = (invoice) => (invoice?.id === u.id ? invoice : { id: u.id, order_id: u.order_id });
  updateMyOrder(u.order_id, (entry) => (entry.invoice = { ...known(entry.invoice), status: u.status }));
  if (detail.order?.id === u.order_id) {
    const isNew = detail.invoice?.id !== u.id;
    detail.invoice = { ...known(detail.invoice), status: u.status };
    renderDetail();
    if (isNew) readInvoiceOnce(detail.order);
  }
  invoiceArrived(u);
}

function readInvoiceOnce(order) {
  fetchInvoice(order)
    .then((invoice) => {
      if (detail.order?.id !== order.id || !invoice) return;
      detail.invoice = withLiveStatus(invoice, detail.invoice);
      renderDetail();
    })
    .catch(fail);
}

// renderLive shows the connection's state in the top bar: "live", or "live
// updates off" with the reason on hover and a Reload for the orders view.
function renderLive(state, err) {
  const el = $("live");
  el.hidden = !liveConn;
  el.dataset.state = state;
  if (err) {
    el.dataset.error = err.code;
    el.title = `Live updates: ${err.message}`;
  } else if (state === "connected") {
    delete el.dataset.error;
    el.title = "Order and invoice changes show up here as they happen.";
  }
  $("live-label").textContent = state === "connected" ? "live" : "live updates off";
  $("live-refresh").hidden = state === "connected" && !el.dataset.error;
}

// refreshOrders reads the orders view once: after the live connection was
// down, or on request while it is.
function refreshOrders() {
  if (currentView !== "orders") return Promise.resolve();
  return Promise.all([loadMyOrders(), reloadDetail()]);
}

// ---- start ----------------------------------------------------------------

function wire() {
  for (const id of ["login", "login-main"]) $(id).addEventListener("click", () => auth.login().catch(fail));
  $("logout").addEventListener("click", () => {
    hideNotice();
    auth.logout();
    showNotice({ kind: "info", title: "Logged out", detail: "Your tokens were discarded." });
  });
  $("refresh").addEventListener("click", (e) =>
    busy(e.currentTarget, async () => {
      try {
        await auth.refresh();
        ok("Session refreshed", "New access and refresh tokens; the previous refresh token is no longer valid.");
      } catch (err) {
        fail(err);
      }
    }),
  );
  $("notice-close").addEventListener("click", hideNotice);
  $("order-form").addEventListener("submit", placeOrder);
  $("profile-form").addEventListener("submit", saveProfile);
  $("lookup-form").addEventListener("submit", lookup);
  $("orders-reload").addEventListener("click", () => loadMyOrders().catch(fail));
  $("detail-reload").addEventListener("click", () => reloadDetail().catch(fail));
  $("live-refresh").addEventListener("click", () => refreshOrders().catch(fail));
  $("pay-invoice").addEventListener("click", (e) => detail.invoice && payInvoice(detail.invoice, detail.order.id, e.currentTarget));
  $("refund-invoice").addEventListener("click", (e) => detail.invoice && refundInvoice(detail.invoice, detail.order.id, e.currentTarget));
  $("cancel-order").addEventListener("click", (e) => cancelOrder(e.currentTarget));
  $("users-reload").addEventListener("click", () => loadUsers().catch(fail));
  $("admin-user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("admin-user-id").value.trim();
    if (id) loadAdminOrders({ user_id: id }).catch(fail);
  });
  setupTabs();
}

async function start() {
  wire();
  try {
    await auth.handleRedirect();
  } catch (err) {
    fail(err);
  }
  renderSession();
  if (!auth.current()) return;
  try {
    await loadProfile();
  } catch (err) {
    fail(err);
  }
  await show(currentView);
  document.body.dataset.ready = "true";
}

start().finally(() => {
  document.body.dataset.loaded = "true";
});
