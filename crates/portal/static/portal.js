// Progressive enhancement for the try-it console: send the form without leaving the page.
// Without JavaScript the form posts and the page comes back with the response in it.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("tryit-form");
  const out = document.getElementById("tryit-result");
  if (!form || !out) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    out.textContent = "Sending…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "X-Portal-Fragment": "1", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      out.innerHTML = await response.text();
    } catch (e) {
      out.textContent = "The request could not be sent: " + e;
    } finally {
      button.disabled = false;
    }
  });
});
