// Filter the catalog table by name as you type (the form also filters on the server: ?q=).
(function () {
  var input = document.getElementById("filter");
  var table = document.getElementById("datasets");
  var empty = document.getElementById("no-match");
  if (!input || !table) { return; }
  function apply() {
    var q = input.value.trim().toLowerCase();
    var shown = 0;
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var name = (rows[i].getAttribute("data-name") || "").toLowerCase();
      var hit = q === "" || name.indexOf(q) !== -1;
      rows[i].hidden = !hit;
      if (hit) { shown++; }
    }
    if (empty) { empty.hidden = shown > 0; }
  }
  input.addEventListener("input", apply);
})();
