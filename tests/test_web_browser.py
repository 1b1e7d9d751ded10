"""The web pages in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a real `coffer serve`: sign in,
upload in the page, overwrite over WebDAV with curl, restore the first
version in the page and read its bytes back over WebDAV, delete the folder and put
it back from the trash, share it with a second account (which reads it over
WebDAV), change the profile and news consent on My Profile, sign out.

Screenshots of each main page are saved in the test's temporary folder
under `screenshots/` (its path is printed; pytest keeps the last runs'
folders under its basetemp)."""
from __future__ import annotations

import subprocess

import pytest

from conftest import need_client
from webdav_harness import CofferServer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,800"]


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = need_client("chromium"), need_client("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
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


def test_sign_in_upload_restore_sign_out(tmp_path, browser):
    from selenium.webdriver.common.by import By
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print("screenshots in", shots)
    with CofferServer(tmp_path / "srv", tls=False) as srv:
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
        b.find_element(By.ID, "files").send_keys(str(first))
        click_and_wait(b, b.find_element(By.ID, "upload"))
        assert "Uploaded" in b.find_element(By.CSS_SELECTOR, ".note").text
        b.save_screenshot(str(shots / "files.png"))
        assert srv.request("GET", "/Reports/report.txt")[2] == first.read_bytes()

        second = tmp_path / "second.txt"
        second.write_bytes(b"second, overwritten over WebDAV\n")
        assert curl_put(srv, "/Reports/report.txt", second) in (200, 201, 204)
        assert srv.request("GET", "/Reports/report.txt")[2] == second.read_bytes()

        b.get(b.current_url)
        click_and_wait(b, b.find_element(By.LINK_TEXT, "Versions"))
        rows = b.find_elements(By.CSS_SELECTOR, "table.listing tbody tr")
        assert len(rows) == 2 and "(current)" in rows[0].text
        b.save_screenshot(str(shots / "versions.png"))
        click_and_wait(b, rows[1].find_element(By.CSS_SELECTOR, "button.restore"))   # the first version, oldest last
        assert "Restored" in b.find_element(By.CSS_SELECTOR, ".note").text
        assert srv.request("GET", "/Reports/report.txt")[2] == first.read_bytes()

        b.get(base + "/.web/files/")
        click_and_wait(b, b.find_element(By.CSS_SELECTOR, "button[aria-label='Move Reports to the trash']"))
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
        assert "KB" in b.find_element(By.ID, "space-used").text
        b.find_element(By.ID, "first-name").send_keys("Alice")
        click_and_wait(b, b.find_element(By.ID, "save-profile"))
        assert "saved" in b.find_element(By.CSS_SELECTOR, ".note").text
        click_and_wait(b, b.find_element(By.ID, "news-toggle"))
        assert b.find_element(By.ID, "news-state").text.startswith("You receive news")
        b.save_screenshot(str(shots / "profile.png"))
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
    shots = tmp_path / "screenshots"
    shots.mkdir()
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
