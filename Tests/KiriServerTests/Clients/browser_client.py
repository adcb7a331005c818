"""The web page in headless Chromium (Debian's chromium and chromium-driver, driven by selenium): fill the form,
generate, watch the progress advance and the preview appear, then the result in the gallery with its parameters.
Usage: python browser_client.py PORT SCREENSHOT.png"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

port, screenshot = int(sys.argv[1]), sys.argv[2]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def check(condition, message):
    if not condition:
        driver.save_screenshot(screenshot)
        raise SystemExit("FAILED: " + message)


try:
    driver.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "sampler")).options) > 20)
    check(Select(driver.find_element(By.ID, "model")).first_selected_option.text == "fashion-mnist", "the model list")
    prompt = driver.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("ankle boot")
    Select(driver.find_element(By.ID, "sampler")).select_by_visible_text("Euler")
    for field, value in [("steps", "400"), ("seed", "42"), ("cfg", "4")]:
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.ID, "run-generate").click()

    # Progress advances: the step counter is seen at two different values while the bar grows.
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline and len(set(seen)) < 3:
        message = driver.find_element(By.ID, "message").text
        if message.startswith("Step "):
            seen.append(int(message.split()[1]))
        time.sleep(0.02)
    check(len(set(seen)) >= 3 and seen[-1] > seen[0], f"the progress advanced: {sorted(set(seen))}")
    bar = driver.find_element(By.ID, "progress-bar").value_of_css_property("width")
    check(bar != "0px", f"the progress bar grew: {bar}")
    check(driver.find_element(By.ID, "preview").get_attribute("src").startswith("data:image/png;base64,"), "a live preview")

    figure = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery figure"))[0]
    wait.until(lambda d: d.execute_script("return document.querySelector('#gallery img').naturalWidth") == 28)
    parameters = figure.find_element(By.CSS_SELECTOR, ".parameters").text
    check(parameters.startswith("ankle boot") and "Steps: 400, Sampler: Euler" in parameters and "Seed: 42" in parameters,
          f"the result's parameters: {parameters!r}")
    check(driver.find_element(By.ID, "message").text.startswith("Done"), "the status says done")

    # Reuse settings puts the result's settings back in the form.
    driver.find_element(By.ID, "steps").clear()
    figure.find_element(By.CSS_SELECTOR, ".reuse").click()
    check(driver.find_element(By.ID, "steps").get_attribute("value") == "400", "reuse settings restores the steps")
    check(not driver.find_element(By.ID, "recipe").is_displayed(), "one tab shows at a time")
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(screenshot)
    print(f"browser: progress seen at steps {sorted(set(seen))[:3]}..., result parameters {parameters.splitlines()[-1]!r}")
    print("browser client: all checks passed")
finally:
    driver.quit()
