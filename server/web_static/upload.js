/* Upload with progress: the files page's upload form sends each chosen file
   in a request of its own and shows how far each one got, and the server's
   sentence when one is refused. Without this script the form still works:
   it sends all the files at once and the next page says how it went. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var list = document.getElementById("upload-progress");
  if (!form || !list || !window.XMLHttpRequest || !window.FormData || !window.DOMParser) {
    return;
  }

  /* The sentence of a refusal page (its element with class "error"), or
     one that says what the status means. */
  function reason(xhr) {
    if (xhr.status === 0) {
      return "The connection to the server was lost; nothing more of this file was saved. Try again.";
    }
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var said = doc.querySelector(".error");
    if (said && said.textContent.trim()) {
      return said.textContent.trim();
    }
    return "The server refused this file (" + xhr.status + " " + xhr.statusText + ").";
  }

  function row(file) {
    var item = document.createElement("li");
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    var state = document.createElement("span");
    state.className = "state";
    state.textContent = "Waiting";
    item.appendChild(name);
    item.appendChild(bar);
    item.appendChild(state);
    list.appendChild(item);
    return {item: item, bar: bar, state: state};
  }

  function refuse(shown, sentence) {
    shown.item.className = "failed";
    shown.state.className = "state error";
    shown.state.textContent = sentence;
  }

  function send(file, shown, token, done) {
    var data = new FormData();
    data.append("csrf", token);          // first: checked before any byte is written
    data.append("files", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Coffer-Upload", "1");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable && e.total > 0) {
        shown.bar.value = Math.floor(100 * e.loaded / e.total);
        var step = Math.floor(shown.bar.value / 25) * 25;    // said in steps: a screen reader is not flooded
        if (shown.state.textContent !== step + " %") {
          shown.state.textContent = step + " %";
        }
      }
    };
    function failed() {
      refuse(shown, reason(xhr));
      done(false);
    }
    xhr.onload = function () {
      if (xhr.status !== 200) {
        failed();
        return;
      }
      shown.bar.value = 100;
      shown.state.textContent = "Uploaded";
      done(true);
    };
    xhr.onerror = failed;
    shown.state.textContent = "0 %";
    xhr.send(data);
  }

  /* Ask the server, with the form token and no file, whether it takes
     uploads from this page now (signed in, token current): a refusal is
     read before any file is sent. */
  function check(token, then) {
    var data = new FormData();
    data.append("csrf", token);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Coffer-Upload", "check");
    xhr.onload = function () { then(xhr.status === 204 ? null : reason(xhr)); };
    xhr.onerror = function () { then(reason(xhr)); };
    xhr.send(data);
  }

  form.addEventListener("submit", function (event) {
    var picked = form.querySelector("input[type=file]").files;
    if (!picked || picked.length === 0) {
      return;                            // the browser's own "choose a file" message
    }
    event.preventDefault();
    var token = form.querySelector("input[name=csrf]").value;
    var files = Array.prototype.slice.call(picked);
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    list.textContent = "";
    var rows = files.map(row);
    var failed = 0;
    function next(i) {
      if (i === files.length) {
        button.disabled = false;
        if (failed === 0) {
          window.location.assign(form.action + "?done=uploaded");
        } else {
          var again = document.createElement("li");
          var link = document.createElement("a");
          link.href = form.action;
          link.textContent = "Show the folder as it is now";
          again.appendChild(link);
          list.appendChild(again);
        }
        return;
      }
      send(files[i], rows[i], token, function (ok) {
        if (!ok) {
          failed += 1;
        }
        next(i + 1);
      });
    }
    check(token, function (refused) {
      if (refused === null) {
        next(0);
        return;
      }
      button.disabled = false;
      rows.forEach(function (shown) { refuse(shown, refused); });
    });
  });
}());
