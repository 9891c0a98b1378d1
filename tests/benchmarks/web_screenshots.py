"""Screenshots of the web page for the docs, taken in the system Chromium against a running service.

    serve run serve.app:app_builder model=demo_out/prior/final.pt &          # the make demo model, on :8000
    python -m tests.benchmarks.web_screenshots --url http://127.0.0.1:8000 \
        --audio runs/db120/test/Track00109/mix.flac --start 4 --seconds 8 --out docs/screenshots

Writes web-separate.png, web-generate.png and web-error.png at 1280 x 800 (full page height of the result) and
web-separate-narrow.png at a phone width.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import soundfile as sf


def excerpt(path: str, start: float, seconds: float, folder: Path) -> Path:
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    out = folder / f"{Path(path).parent.name}.wav"
    sf.write(out, wave[int(start * rate):int((start + seconds) * rate)], rate)
    return out


def main() -> None:
    from selenium.webdriver.common.by import By

    from tests.browser import chromium, wait_for

    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.web_screenshots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--audio", required=True, help="a mixture to separate and vary")
    parser.add_argument("--start", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        song = excerpt(args.audio, args.start, args.seconds, folder)
        for width, height, names in ((1280, 800, ("separate", "generate", "error")), (390, 844, ("narrow",))):
            with chromium(folder / str(width), width=width, height=height) as driver:
                driver.get(f"{args.url}/")
                driver.execute_script(f"sessionStorage.setItem('ucr-api-key', {args.api_key!r}); location.reload()")
                wait_for(lambda: "components (K)" in driver.find_element(By.ID, "model-card").text, 60, "the card", driver)
                driver.find_element(By.ID, "separate-file").send_keys(str(song))
                driver.find_element(By.ID, "separate-go").click()
                wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#separate-result .component"), 300,
                         "the separation", driver)
                driver.execute_script("document.getElementById('separate').scrollIntoView()")
                if "narrow" in names:
                    driver.save_screenshot(str(out / "web-separate-narrow.png"))
                    continue
                driver.set_window_size(width, 1400)
                driver.save_screenshot(str(out / "web-separate.png"))
                if driver.find_element(By.ID, "generate-go").is_enabled():
                    driver.find_element(By.ID, "generate-go").click()
                    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#generate-result .item"), 300,
                             "a generation", driver)
                    driver.execute_script("document.getElementById('generate').scrollIntoView()")
                    driver.save_screenshot(str(out / "web-generate.png"))
                notes = folder / "notes.txt"
                notes.write_text("not audio")
                driver.find_element(By.ID, "separate-file").send_keys(str(notes))
                driver.find_element(By.ID, "separate-go").click()
                wait_for(lambda: driver.find_element(By.ID, "error").is_displayed(), 30, "the error", driver)
                driver.execute_script("document.getElementById('separate').scrollIntoView()")
                driver.save_screenshot(str(out / "web-error.png"))
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
