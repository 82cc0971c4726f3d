/* Flexmarket DSO portal: ask before a binding or destructive POST (accepting an offer, cancelling a request).
   Forms opt in with data-confirm="question"; without JavaScript they simply submit. */
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form instanceof HTMLFormElement ? form.getAttribute("data-confirm") : null;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
