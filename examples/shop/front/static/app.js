// Fetches /api/products (front passes it on to the api service) and shows
// each product with its price and stock, and which api pod answered.
// Reload a few times to watch the answers spread over the api replicas.
"use strict";

const list = document.getElementById("products");
const status = document.getElementById("status");
const servedBy = document.getElementById("served-by");
const reload = document.getElementById("reload");

const euros = new Intl.NumberFormat("en", { style: "currency", currency: "EUR" });

function stockText(units) {
  if (units === null || units === undefined) return "stock unknown";
  if (units === 0) return "sold out";
  return `${units} in stock`;
}

// Built with textContent, never innerHTML: the data comes from the network.
function productItem(product) {
  const item = document.createElement("li");
  item.className = "product";
  if (product.stock === 0) item.classList.add("sold-out");

  const name = document.createElement("span");
  name.className = "name";
  name.textContent = product.name;

  const price = document.createElement("span");
  price.className = "price";
  price.textContent = euros.format(product.price);

  const stock = document.createElement("span");
  stock.className = "stock";
  stock.textContent = stockText(product.stock);

  item.append(name, price, stock);
  return item;
}

async function load() {
  reload.disabled = true;
  status.textContent = "Loading…";
  status.className = "";
  try {
    const response = await fetch("/api/products", { cache: "no-store" });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const reason = body && body.error ? body.error : response.statusText;
      throw new Error(`${response.status}: ${reason}`);
    }
    list.replaceChildren(...body.products.map(productItem));
    servedBy.textContent = body.served_by;
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    status.textContent = `Could not load the products (${error.message})`;
    status.className = "error";
  } finally {
    reload.disabled = false;
  }
}

reload.addEventListener("click", load);
load();
