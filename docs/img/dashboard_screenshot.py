"""Regenerate docs/img/dashboard.png: the initkit tab over synthetic demo-like logs.

Writes four runs (the demo's initializations, 32 layers, planted findings) with
`keras_initkit.dashboard.fixtures`, starts `tensorboard` on 127.0.0.1, opens the initkit
tab in headless Chromium (selenium + chromedriver) and saves the page.

    python docs/img/dashboard_screenshot.py [--logdir DIR] [--out docs/img/dashboard.png]
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

from test_dashboard_browser import chrome_driver, open_dashboard, tensorboard  # noqa: E402

from keras_initkit.dashboard import fixtures  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", help="logs to show (default: synthetic demo-like logs)")
    parser.add_argument("--out", default=os.path.join(HERE, "dashboard.png"))
    parser.add_argument("--row", type=int, default=20, help="the row whose curve is shown")
    parser.add_argument("--metric", default="dead_fraction", help="the metric shown")
    args = parser.parse_args(argv)
    log_dir = args.logdir
    if log_dir is None:
        log_dir = tempfile.mkdtemp(prefix="initkit_screenshot_")
        fixtures.write_logs(log_dir, layers=32, steps=40)
    url, process = tensorboard(log_dir)
    driver = chrome_driver()
    try:
        driver.set_window_size(1500, 1650)
        open_dashboard(driver, url, process)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
            args.metric
        )
        time.sleep(1)
        labels = driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")
        if labels:
            driver.execute_script("arguments[0].click()", labels[min(args.row, len(labels) - 1)])
        time.sleep(1)
        driver.switch_to.default_content()
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=10)
    print(args.out)


if __name__ == "__main__":
    main()
