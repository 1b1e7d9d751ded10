"""The web pages in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a real `coffer serve`: sign in,
upload two files in the page (its script, with progress), overwrite one over
WebDAV with curl, restore the first version in the page and read its bytes
back over SFTP, move it, see the folder as it was, delete the folder and put
it back from the trash, share it with a second account (which reads it over
WebDAV), change the profile, news consent and password on My Profile (and
sign in again with the new one), open Connect,
change the plan on My account, sign out. An upload bigger than the space
left shows the server's sentence in the page. Every main page passes
axe-core's check with no serious or critical violation (`PAGES`;
`assert_accessible` for more).

Screenshots of each main page are saved in `var/screenshots/` of the
checkout, or in the folder named by COFFER_SCREENSHOTS (printed with `-s`)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from conftest import need_client
from webdav_harness import CofferServer

ROOT = Path(__file__).resolve().parent.parent
# axe-core from npm, installed by scripts/test (npm install --prefix .venv/node axe-core@4)
AXE = Path(os.environ.get("COFFER_AXE", ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"))
SERIOUS = ("serious", "critical")


def screenshots() -> Path:
    """The folder README names for the screenshots of the main pages."""
    folder = Path(os.environ.get("COFFER_SCREENSHOTS", ROOT / "var" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print("screenshots in", folder)
    return folder


def assert_accessible(b, url: str | None, shot: Path | None = None) -> None:
    """Load `url` (None: the page as it is now) and run axe-core in it: no
    serious or critical violation. A missing axe-core fails (scripts/test
    installs it)."""
    if not AXE.is_file():
        pytest.fail(f"axe-core is not installed at {AXE}: run scripts/test, or "
                    "npm install --prefix .venv/node axe-core@4")
    if url is not None:
        b.get(url)
    b.execute_script(AXE.read_text())
    b.set_script_timeout(60)
    found = b.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(function (r) { done(r.violations); }, function (e) { done(String(e)); });")
    assert isinstance(found, list), found
    bad = [{"id": v["id"], "impact": v["impact"], "help": v["help"],
            "where": [n["target"] for n in v["nodes"]][:5]} for v in found if v["impact"] in SERIOUS]
    if shot is not None:
        b.save_screenshot(str(shot))
    assert not bad, f"{url or b.current_url}: " + json.dumps(bad, indent=1)


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,800"]


@pytest.fixture
def browser(tmp_path):
    yield from _browser(tmp_path)


def _browser(tmp_path, scripts: bool = True):
    """A headless Chromium with its own profile in `tmp_path`, quit at the
    end; with `scripts` false, pages run no JavaScript."""
    chromium, chromedriver = need_client("chromium"), need_client("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    if not scripts:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(tmp_path / "driver.log")),
                              options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def click_and_wait(b, element) -> None:
    """Click what sends a form or follows a link, and wait until the next
    page has loaded in place of this one (this page's window carries a mark
    that a new page does not)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait
    b.execute_script("window.cofferOldPage = true")

    def replaced(driver):
        try:
            return driver.execute_script("return !window.cofferOldPage && document.readyState === 'complete'")
        except WebDriverException:          # between the pages
            return False
    element.click()
    WebDriverWait(b, 30).until(replaced)


def curl_put(srv, path: str, body_file) -> int:
    """Overwrite a file over WebDAV with curl (the password on stdin, never argv)."""
    cmd = [need_client("curl"), "-s", "-K", "-", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(body_file),
           srv.url.rstrip("/") + path]
    r = subprocess.run(cmd, input=f'user = "alice:{srv.accounts["alice"]}"\n'.encode(), capture_output=True,
                       timeout=60)
    return int(r.stdout)


def sftp_read(srv, path: str, who: str = "alice") -> bytes:
    """A file's bytes as an SFTP client reads them from the same server."""
    t = paramiko.Transport(("127.0.0.1", srv.sftp_port))
    try:
        t.connect(username=who, password=srv.accounts[who])
        with paramiko.SFTPClient.from_transport(t) as sftp, sftp.open(path, "rb") as f:
            return f.read()
    finally:
        t.close()


def sign_in(b, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    b.get(base + "/.web/login")
    b.find_element(By.ID, "name").send_keys(name)
    b.find_element(By.ID, "password").send_keys(password)
    click_and_wait(b, b.find_element(By.ID, "sign-in"))
    assert b.current_url == base + "/.web/files/", b.find_element(By.TAG_NAME, "main").text


def test_sign_in_upload_restore_sign_out(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    shots = screenshots()
    with CofferServer(tmp_path / "srv", tls=False, sftp=True) as srv:
        base = srv.url.rstrip("/")
        b = browser
        b.get(base + "/")                                    # a browser at the WebDAV address: the sign-in page
        assert b.current_url.startswith(base + "/.web/login")
        assert b.find_element(By.CSS_SELECTOR, "label[for=password]").text == "Password"
        b.find_element(By.ID, "name").send_keys("alice")
        b.find_element(By.ID, "password").send_keys("wrong password")
        click_and_wait(b, b.find_element(By.ID, "sign-in"))
        assert "wrong" in b.find_element(By.CSS_SELECTOR, ".error").text
        b.save_screenshot(str(shots / "sign-in.png"))
        b.find_element(By.ID, "name").clear()
        b.find_element(By.ID, "name").send_keys("alice")
        b.find_element(By.ID, "password").send_keys(srv.accounts["alice"])
        click_and_wait(b, b.find_element(By.ID, "sign-in"))
        assert b.current_url == base + "/.web/files/", b.find_element(By.TAG_NAME, "main").text
        cookie = b.get_cookie("coffer_web")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        b.find_element(By.ID, "folder-name").send_keys("Reports")
        click_and_wait(b, b.find_element(By.ID, "mkdir"))
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Reports/"))
        first = tmp_path / "report.txt"
        first.write_bytes(b"first draft\n" * 1000)
        notes = tmp_path / "notes.bin"
        notes.write_bytes(os.urandom(2_000_000))
        b.find_element(By.ID, "files").send_keys(f"{first}\n{notes}")       # two files, the page's script
        click_and_wait(b, b.find_element(By.ID, "upload"))
        assert b.current_url.endswith("/.web/files/Reports/?done=uploaded")
        assert "Uploaded" in b.find_element(By.CSS_SELECTOR, ".note").text
        assert not b.find_elements(By.ID, "no-script")                        # scripts ran here
        assert srv.request("GET", "/Reports/notes.bin")[2] == notes.read_bytes()
        b.save_screenshot(str(shots / "files.png"))
        assert srv.request("GET", "/Reports/report.txt")[2] == first.read_bytes()

        second = tmp_path / "second.txt"
        second.write_bytes(b"second, overwritten over WebDAV\n")
        assert curl_put(srv, "/Reports/report.txt", second) in (200, 201, 204)
        assert srv.request("GET", "/Reports/report.txt")[2] == second.read_bytes()

        b.get(b.current_url)
        click_and_wait(b, b.find_element(By.CSS_SELECTOR, "a[href='/.web/versions/Reports/report.txt']"))
        rows = b.find_elements(By.CSS_SELECTOR, "table.listing tbody tr")
        assert len(rows) == 2 and "(current)" in rows[0].text
        b.save_screenshot(str(shots / "versions.png"))
        click_and_wait(b, rows[1].find_element(By.CSS_SELECTOR, "button.restore"))   # the first version, oldest last
        assert "Restored" in b.find_element(By.CSS_SELECTOR, ".note").text
        assert sftp_read(srv, "/Reports/report.txt") == first.read_bytes()

        b.get(base + "/.web/files/Reports/")                  # move a file to the top folder
        click_and_wait(b, b.find_element(By.CSS_SELECTOR, "a[aria-label='Move notes.bin to another folder']"))
        from selenium.webdriver.support.ui import Select
        Select(b.find_element(By.ID, "move-to")).select_by_visible_text("My files (top)")
        click_and_wait(b, b.find_element(By.ID, "move"))
        assert "Moved" in b.find_element(By.CSS_SELECTOR, ".note").text
        assert srv.request("GET", "/notes.bin")[2] == notes.read_bytes()
        assert srv.request("GET", "/Reports/notes.bin")[0] == 404

        b.get(base + "/.web/files/")
        click_and_wait(b, b.find_element(By.CSS_SELECTOR, "button[aria-label='Delete Reports (it goes to the trash)']"))
        assert "trash" in b.find_element(By.CSS_SELECTOR, ".note").text
        assert srv.request("PROPFIND", "/Reports", headers={"Depth": "0"})[0] == 404
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Trash"))
        b.save_screenshot(str(shots / "trash.png"))
        click_and_wait(b, b.find_element(By.CSS_SELECTOR, "button.put-back"))
        assert srv.request("GET", "/Reports/report.txt")[2] == first.read_bytes()

        b.get(base + "/.web/files/")
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Share"))
        assert b.find_element(By.ID, "share-folder").get_attribute("value") == "/Reports"
        b.find_element(By.ID, "share-account").send_keys("bob")
        click_and_wait(b, b.find_element(By.ID, "share"))
        assert "Shared" in b.find_element(By.CSS_SELECTOR, ".note").text
        b.save_screenshot(str(shots / "sharing.png"))
        assert srv.request("GET", "/Shared/alice/Reports/report.txt", user="bob")[2] == first.read_bytes()

        click_and_wait(b, b.find_element(By.LINK_TEXT, "My Profile"))
        assert b.find_element(By.ID, "account-name").text == "alice"
        assert b.find_element(By.ID, "plan").text == "basic"
        assert "MB" in b.find_element(By.ID, "space-used").text
        b.find_element(By.ID, "first-name").send_keys("Alice")
        click_and_wait(b, b.find_element(By.ID, "save-profile"))
        assert "saved" in b.find_element(By.CSS_SELECTOR, ".note").text
        click_and_wait(b, b.find_element(By.ID, "news-toggle"))
        assert b.find_element(By.ID, "news-state").text.startswith("You receive news")
        b.save_screenshot(str(shots / "profile.png"))
        # a new password: signed in again with it; the old one opens nothing, in the page or over WebDAV
        old_pw, new_pw = srv.accounts["alice"], "alice-new-pw-2026"
        b.find_element(By.ID, "current").send_keys(old_pw)
        b.find_element(By.ID, "new").send_keys(new_pw)
        b.find_element(By.ID, "again").send_keys(new_pw)
        click_and_wait(b, b.find_element(By.ID, "change-password"))
        assert "password is changed" in b.find_element(By.CSS_SELECTOR, ".note").text
        click_and_wait(b, b.find_element(By.ID, "sign-out"))
        b.find_element(By.ID, "name").send_keys("alice")
        b.find_element(By.ID, "password").send_keys(old_pw)
        click_and_wait(b, b.find_element(By.ID, "sign-in"))
        assert "wrong" in b.find_element(By.TAG_NAME, "main").text
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 401
        srv.accounts["alice"] = new_pw
        sign_in(b, base, "alice", new_pw)
        assert srv.request("PROPFIND", "/", headers={"Depth": "0"})[0] == 207
        assert sftp_read(srv, "/Reports/report.txt")
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Connect"))
        assert "--webdav-user alice" in b.find_element(By.ID, "rclone-cmd").text
        b.save_screenshot(str(shots / "connect.png"))
        click_and_wait(b, b.find_element(By.LINK_TEXT, "My account"))
        Select(b.find_element(By.ID, "plan-choice")).select_by_value("pro")
        click_and_wait(b, b.find_element(By.ID, "change-plan"))
        assert b.find_element(By.ID, "plan").text == "pro"
        b.save_screenshot(str(shots / "account.png"))
        b.set_window_size(390, 844)                           # a phone's width
        b.get(base + "/.web/files/Reports/")
        b.save_screenshot(str(shots / "files-phone.png"))
        assert b.find_element(By.LINK_TEXT, "report.txt")
        assert b.execute_script("return document.documentElement.scrollWidth") <= 390

        click_and_wait(b, b.find_element(By.ID, "sign-out"))
        assert b.current_url.startswith(base + "/.web/login")
        assert b.get_cookie("coffer_web") is None
        b.get(base + "/.web/files/Reports/")
        assert b.current_url.startswith(base + "/.web/login")


def refused_in_page(b, *files: Path):
    """Upload `files` with the page's script; the first row it marks failed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    b.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    b.find_element(By.ID, "upload").click()
    WebDriverWait(b, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-progress li.failed"))
    return b.find_element(By.CSS_SELECTOR, "#upload-progress li.failed")


def test_an_upload_past_the_quota_says_so_in_the_page(tmp_path, browser):
    """The page's script shows the server's sentence for a file bigger than
    the space left, refused in the middle of its upload; the file before it
    is saved, the refused one keeps its earlier version, nothing half-written."""
    from selenium.webdriver.common.by import By
    MB = 1024 * 1024
    with CofferServer(tmp_path / "srv", tls=False, quotas={"alice": 3 * MB}) as srv:
        base = srv.url.rstrip("/")
        assert srv.request("PUT", "/keep.bin", body=b"old")[0] == 201
        small, big = tmp_path / "small.txt", tmp_path / "keep.bin"
        small.write_bytes(b"fits\n")
        big.write_bytes(os.urandom(8 * MB))
        b = browser
        sign_in(b, base, "alice", srv.accounts["alice"])
        failed = refused_in_page(b, small, big)
        assert "keep.bin" in failed.text
        assert "Your space is full, so nothing of keep.bin was saved" in failed.text, failed.text
        rows = b.find_elements(By.CSS_SELECTOR, "#upload-progress li")
        assert "small.txt" in rows[0].text and "Uploaded" in rows[0].text
        assert rows[0].find_element(By.TAG_NAME, "progress").get_attribute("value") == "100"
        assert b.find_element(By.LINK_TEXT, "Show the folder as it is now")
        b.save_screenshot(str(screenshots() / "upload-space-full.png"))
        assert_accessible(b, None)
        b.get(base + "/.web/files/")                          # a stale form token: said in words too
        b.execute_script("document.querySelector('#upload-form input[name=csrf]').value = 'stale'")
        text = refused_in_page(b, big).text
        assert "security token is missing or out of date" in text, text
        b.get(base + "/.web/files/")                          # signed out meanwhile: said before sending
        b.delete_cookie("coffer_web")
        text = refused_in_page(b, big).text
        assert "You are not signed in" in text, text
        assert srv.request("GET", "/keep.bin")[2] == b"old"
        assert srv.request("GET", "/small.txt")[2] == b"fits\n"
        status, _, body = srv.request("PROPFIND", "/.coffer/versions/keep.bin", headers={"Depth": "1"})
        assert status == 207 and body.count(b"<D:response>") == 2       # the folder and its one version


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server where alice has a folder with a file of two versions, a
    deleted file, a folder shared with bob, and a signed-in Chromium."""
    tmp = tmp_path_factory.mktemp("pages")
    need_client("chromium")
    with CofferServer(tmp / "srv", tls=False) as srv:
        srv.request("MKCOL", "/Docs")
        srv.request("PUT", "/Docs/report.txt", body=b"one")
        time.sleep(1.1)
        srv.request("PUT", "/Docs/report.txt", body=b"two")
        srv.request("PUT", "/gone.txt", body=b"gone")
        srv.request("DELETE", "/gone.txt")
        gen = _browser(tmp)
        b = next(gen)
        try:
            base = srv.url.rstrip("/")
            sign_in(b, base, "alice", srv.accounts["alice"])
            from selenium.webdriver.common.by import By
            b.get(base + "/.web/shares/?folder=%2FDocs")
            b.find_element(By.ID, "share-account").send_keys("bob")
            click_and_wait(b, b.find_element(By.ID, "share"))
            yield srv, b
        finally:
            gen.close()


# The main pages axe-core checks (add new pages here); "{past}" is a time with the files above.
PAGES = ["/.web/login", "/.web/files/", "/.web/files/Docs/", "/.web/files/Docs/?rename=report.txt",
         "/.web/files/Docs/?move=report.txt", "/.web/versions/Docs/report.txt", "/.web/trash/",
         "/.web/shares/", "/.web/profile/", "/.web/account/", "/.web/connect/", "/.web/security/",
         "/.web/past/", "/.web/past/{past}/Docs/", "/.web/files/No-such-folder/"]


@pytest.mark.parametrize("page", PAGES)
def test_main_pages_pass_axe(site, page):
    srv, b = site
    past = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    url = srv.url.rstrip("/") + page.format(past=past)
    name = page.strip("/").replace(".web/", "").replace("/", "-").replace("?", "-").replace("=", "-") or "top"
    name = name.replace("{past}", "past")
    b.set_window_size(1000, 800)
    assert_accessible(b, url, screenshots() / f"page-{name}.png")
    b.set_window_size(390, 844)                           # a phone's width: nothing wider than the screen
    b.get(url)
    b.save_screenshot(str(screenshots() / f"page-{name}-phone.png"))
    assert b.execute_script("return document.documentElement.scrollWidth") <= 390
    from selenium.webdriver.common.by import By
    shown = "main button, main a, main td:not(.wide-only), main input:not([type=hidden]):not([aria-hidden=true])"
    for element in b.find_elements(By.CSS_SELECTOR, shown):
        assert element.is_displayed(), element.get_attribute("outerHTML")      # nothing hidden on a phone


def test_uploading_without_javascript(tmp_path):
    """With scripts off the upload form sends every chosen file in one
    request and the next page says it worked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    gen = _browser(tmp_path, scripts=False)
    b = next(gen)
    try:
        with CofferServer(tmp_path / "srv", tls=False) as srv:
            base = srv.url.rstrip("/")
            b.get(base + "/.web/login")
            b.find_element(By.ID, "name").send_keys("alice")
            b.find_element(By.ID, "password").send_keys(srv.accounts["alice"])
            b.find_element(By.ID, "sign-in").click()
            WebDriverWait(b, 30).until(lambda d: d.current_url == base + "/.web/files/")
            one, two = tmp_path / "one.txt", tmp_path / "two.txt"
            one.write_bytes(b"one\n")
            two.write_bytes(b"two\n" * 100_000)
            assert b.find_element(By.ID, "no-script").is_displayed()                # scripts are off here
            b.find_element(By.ID, "files").send_keys(f"{one}\n{two}")
            b.find_element(By.ID, "upload").click()
            WebDriverWait(b, 60).until(lambda d: d.current_url.endswith("?done=uploaded"))
            assert "Uploaded" in b.find_element(By.CSS_SELECTOR, ".note").text
            assert not b.find_elements(By.CSS_SELECTOR, "#upload-progress li")     # the script did not run
            assert srv.request("GET", "/one.txt")[2] == one.read_bytes()
            assert srv.request("GET", "/two.txt")[2] == two.read_bytes()
    finally:
        gen.close()


def rclone_ls(srv, user: str, password: str, tmp) -> subprocess.CompletedProcess:
    """`rclone lsf` of the account over WebDAV (the password obscured through stdin, given by environment)."""
    exe = need_client("rclone")
    obscured = subprocess.run([exe, "obscure", "-"], input=password.encode(), capture_output=True,
                              check=True).stdout.decode().strip()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "RCLONE_CONFIG": str(tmp / "rclone.conf"),
           "RCLONE_CONFIG_COFFER_TYPE": "webdav", "RCLONE_CONFIG_COFFER_URL": srv.url,
           "RCLONE_CONFIG_COFFER_USER": user, "RCLONE_CONFIG_COFFER_PASS": obscured,
           "RCLONE_CONFIG_COFFER_VENDOR": "other"}
    return subprocess.run([exe, "--low-level-retries", "1", "--retries", "1", "lsf", "coffer:"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_two_step_sign_in_and_an_app_password_for_rclone(tmp_path, browser):
    """Enrol TOTP on the Security page (the key shown beside the QR code, the
    code computed as an authenticator app does), sign in again with a code;
    make an app password in the page and list the files with rclone with it,
    while rclone with the password alone is refused."""
    import time

    import pyotp
    from selenium.webdriver.common.by import By
    shots = screenshots()
    with CofferServer(tmp_path / "srv", tls=False, extra="[server]\nworkers = 1\n") as srv:
        base = srv.url.rstrip("/")
        b = browser
        assert srv.request("MKCOL", "/Photos")[0] == 201

        def sign_in(code=None):
            b.get(base + "/.web/login")
            b.find_element(By.ID, "name").send_keys("alice")
            b.find_element(By.ID, "password").send_keys(srv.accounts["alice"])
            click_and_wait(b, b.find_element(By.ID, "sign-in"))
            if code is not None:
                assert b.current_url.startswith(base + "/.web/login"), b.current_url
                b.find_element(By.ID, "code").send_keys(code)
                click_and_wait(b, b.find_element(By.ID, "check-code"))
            assert b.current_url == base + "/.web/files/", b.find_element(By.TAG_NAME, "main").text

        sign_in()
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Security"))
        click_and_wait(b, b.find_element(By.ID, "totp-begin"))
        qr = b.find_element(By.ID, "totp-qr")
        assert qr.get_attribute("src").startswith("data:image/svg+xml") and qr.size["width"] > 100
        assert b.execute_script("return arguments[0].naturalWidth", qr) > 0      # the CSP lets it show
        totp = pyotp.TOTP(b.find_element(By.ID, "totp-secret").text)
        b.save_screenshot(str(shots / "security-enrol.png"))
        b.find_element(By.ID, "totp-code").send_keys(totp.now())
        b.find_element(By.ID, "totp-password").send_keys(srv.accounts["alice"])
        click_and_wait(b, b.find_element(By.ID, "totp-confirm"))
        codes = b.find_elements(By.CSS_SELECTOR, "#recovery-codes li")
        assert len(codes) == 10, b.find_element(By.TAG_NAME, "main").text
        assert "On since" in b.find_element(By.ID, "totp-state").text

        b.find_element(By.ID, "app-label").send_keys("rclone on the laptop")
        click_and_wait(b, b.find_element(By.ID, "app-create"))
        secret = b.find_element(By.ID, "new-app-password").text
        assert secret.startswith("app-")
        rows = b.find_elements(By.CSS_SELECTOR, "#app-passwords tbody tr")
        assert len(rows) == 1 and "rclone on the laptop" in rows[0].text and "never" in rows[0].text
        b.save_screenshot(str(shots / "security.png"))
        assert "Photos/" in rclone_ls(srv, "alice", secret, tmp_path).stdout.split()
        refused = rclone_ls(srv, "alice", srv.accounts["alice"], tmp_path)
        assert refused.returncode != 0 and "Photos/" not in refused.stdout

        click_and_wait(b, b.find_element(By.ID, "sign-out"))
        sign_in(code=totp.at(time.time() + 30))        # the next step's: the enrolment used this one
        b.get(base + "/.web/security/")
        rows = b.find_elements(By.CSS_SELECTOR, "#app-passwords tbody tr")
        assert "never" not in rows[0].text                     # rclone's use is shown
        assert b.find_elements(By.CSS_SELECTOR, "#session-records tbody tr")
