// Lists the items of examples/rest.lua and adds new ones, through its JSON API. With
// ?add=NAME in the page's address, it first adds NAME (the browser spec uses this).
"use strict";

const list = document.getElementById("items");
const status = document.getElementById("status");

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(method + " " + path + ": " + res.status);
  return res.status === 204 ? null : res.json();
}

async function refresh() {
  const items = await api("GET", "/items");
  list.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.dataset.id = item.id;
    li.textContent = item.name;
    return li;
  }));
  status.textContent = items.length + " items";
}

document.getElementById("add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("name");
  await api("POST", "/items", { name: input.value });
  input.value = "";
  await refresh();
});

(async () => {
  try {
    const add = new URLSearchParams(location.search).get("add");
    if (add) await api("POST", "/items", { name: add });
    await refresh();
  } catch (e) {
    status.textContent = "error: " + e.message;
  }
})();
