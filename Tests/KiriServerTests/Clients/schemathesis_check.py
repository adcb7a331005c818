"""Schemathesis against a running `kiri serve` (default options: the default model only, loopback, no token, no
--allow-recipes): every operation of the served /openapi.json, in positive and negative cases and with the
document's own examples, checked for server errors and for status codes, media types, headers and bodies the
document does not describe.

Usage: python schemathesis_check.py PORT [SCHEMA.json]
(SCHEMA.json, for development only, replaces the served document.)

The served document stays the truth; the checks run on copies of it made cheap and strict to test. The test copy
lowers the largest steps, n_iter, batch_size, width and height (and keeps a recipe job's own arguments small),
and lets the response schemas name every field the server may send (additionalProperties false). A steered copy
besides replaces free text with the server's own names (the default model's classes, samplers, schedulers,
models, bundled recipes, small PNGs, jobs and their files, plus a few names it refuses), so that generated
requests reach real generations and real jobs, not only 422s. Nothing is left out: every operation runs; the run
prints what the copies change, each operation's cases and statuses, and every failure with its request.
Seeding is fixed (Hypothesis derandomized, no example database), so a run repeats the last one's requests.
"""
import base64
import copy
import json
import struct
import sys
import time
import zlib
from collections import Counter

import hypothesis
import requests
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup

# Cases per operation: Hypothesis stops early when an operation has fewer distinct ones.
POSITIVE_CASES = 25
STEERED_CASES = 30
NEGATIVE_CASES = 20
# The test copy's largest values: a generated generation takes well under a second at these.
CHEAP = {"steps": 4, "n_iter": 2, "batch_size": 2, "width": 32, "height": 32}
# A request whose job would cost more than this many sampler steps × images × (pixels / 28²) is not sent (negative
# cases can hold values the copy does not allow but the server does); those dropped are counted and printed.
COST_BUDGET = 64
# Recipes cheap enough at small settings; the others (train, grid) take seconds to minutes.
CHEAP_RECIPES = ["txt2img", "gaussian_euler", "hires", "compare_samplers", "img2img", "inpaint", "mask", "postprocess"]
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot", ""]
CHECK_NAMES = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_headers_conformance", "response_schema_conformance"]
REQUEST_TIMEOUT = 60
# The whole run's limit: cases past it are not sent, and the run fails.
RUN_SECONDS = 300
# Schemas only responses use: in the test copy they allow no field the document does not name, so that a field the
# server adds or renames shows up.
RESPONSE_SCHEMAS = ["A1111GenerationResponse", "Progress", "Sampler", "Scheduler", "SDModel", "Options", "JobSnapshot",
                    "Plugins", "Error", "ValidationError"]


def png(width, height, value):
    """A grey PNG, base64."""
    rows = b"".join(b"\x00" + bytes([value]) * width for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def closed(schema):
    """`schema` with `additionalProperties: false` on each object that names its properties and says nothing else."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            closed(value)
    elif isinstance(schema, list):
        for value in schema:
            closed(value)
    return schema


def choose(schema, values):
    """`schema` narrowed to `values` (the server's own names), nullable as it was."""
    return {"type": "string", "enum": values, "nullable": schema.get("nullable", False)}


def test_copy(document, facts, steered):
    """The document the checks use, with cheap limits; `steered`: free text replaced by the server's own names
    (and a few it refuses), so that requests reach real generations and jobs. Returns it and what it changed."""
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    changes = []
    for name in RESPONSE_SCHEMAS:
        closed(schemas[name])
    changes.append(f"{', '.join(RESPONSE_SCHEMAS)}: no undocumented fields (additionalProperties false)")
    request = schemas["A1111GenerationRequest"]["properties"]
    for key, limit in CHEAP.items():
        changes.append(f"{key} maximum {request[key]['maximum']} -> {limit}")
        request[key]["maximum"] = limit
    # A recipe's own arguments have no limits in the document (the recipe checks them): cheap ones only.
    schemas["JobRequest"]["properties"]["arguments"] = {
        "nullable": True,
        "anyOf": [
            {"type": "array", "maxItems": 4,
             "items": {"type": "string", "enum": ["steps=1", "steps=3", "prompt=bag", "prompt=a red fox", "seed=7",
                                                  "no equals sign", "unknown=1", "model=fashion-mnist"]}},
            {"type": "object", "additionalProperties": False,
             "properties": {"prompt": {"type": "string", "enum": CLASSES + ["a red fox"]},
                            "steps": {"type": "integer", "minimum": 1, "maximum": 20},
                            "seed": {"type": "integer", "minimum": 0, "maximum": 2 ** 32},
                            "cfg": {"type": "number", "minimum": 0, "maximum": 10},
                            "model": {"type": "string", "enum": facts["models"] + ["missing.safetensors"]}}},
        ],
    }
    changes.append("arguments (POST /kiri/v1/jobs): prompt, steps (1-20), seed, cfg and model only")
    if not steered:
        return doc, changes
    choices = {"prompt": CLASSES + ["a red fox"], "sampler_name": facts["samplers"], "sampler_index": facts["samplers"],
               "scheduler": facts["schedulers"] + ["nope"]}
    for key, values in choices.items():
        request[key] = choose(request[key], values)
    overrides = request["override_settings"]["properties"]
    overrides["sd_model_checkpoint"] = choose(overrides["sd_model_checkpoint"], facts["models"] + ["missing"])
    update = schemas["OptionsUpdate"]["properties"]
    update["sd_model_checkpoint"] = choose(update["sd_model_checkpoint"], facts["models"] + ["missing"])
    changes.append(f"prompt, sampler_name, sampler_index, scheduler, sd_model_checkpoint: the server's own names")
    image = schemas["A1111Img2ImgRequest"]["allOf"][1]["properties"]
    image["init_images"]["items"] = {"type": "string", "enum": [png(28, 28, 128), png(16, 8, 200)]}
    image["mask"] = choose(image["mask"], [png(28, 28, 255), ""])
    changes.append("init_images, mask: small PNGs")
    job = schemas["JobRequest"]
    recipes = [name for name in CHEAP_RECIPES if name in facts["recipes"]]
    job["properties"]["recipe"] = choose(job["properties"]["recipe"], recipes + ["missing"])
    for branch in job["oneOf"]:
        if "recipe" in branch["required"]:
            branch["properties"]["recipe"] = {"type": "string", "enum": recipes + ["missing"]}
    slow = sorted(set(facts["recipes"]) - set(recipes))
    changes.append(f"recipe: {', '.join(recipes)} (not {', '.join(slow)}: slow)")
    job_id = doc["components"]["parameters"]["JobId"]
    job_id["schema"] = choose(job_id["schema"], facts["jobs"] + ["0000000000000000"])
    for parameter in doc["paths"]["/kiri/v1/jobs/{id}/outputs/{name}"]["parameters"]:
        if parameter.get("name") == "name":
            parameter["schema"] = choose(parameter["schema"], facts["outputs"] + ["../../etc/passwd", "missing.png"])
    changes.append(f"job ids: {', '.join(facts['jobs'])} (from the server) and one missing; output names: "
                   f"{', '.join(facts['outputs'])} and two missing")
    return doc, changes


def wait_for_job(session, base, job_id, limit=30):
    """The job's final snapshot, or None after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        snapshot = session.get(f"{base}/kiri/v1/jobs/{job_id}", timeout=REQUEST_TIMEOUT).json()
        if snapshot["status"] not in ("queued", "running"):
            return snapshot
        time.sleep(0.05)
    return None


def server_facts(session, base):
    """The server's names, and two finished jobs (one succeeded with a file, one failed) to point requests at."""
    plugins = session.get(f"{base}/kiri/v1/plugins", timeout=REQUEST_TIMEOUT).json()
    samplers = session.get(f"{base}/sdapi/v1/samplers", timeout=REQUEST_TIMEOUT).json()
    schedulers = session.get(f"{base}/sdapi/v1/schedulers", timeout=REQUEST_TIMEOUT).json()
    facts = {
        "recipes": plugins["recipes"], "models": plugins["models"],
        "samplers": sorted({name for sampler in samplers for name in [sampler["name"]] + sampler["aliases"]}),
        "schedulers": sorted({name for scheduler in schedulers for name in (scheduler["name"], scheduler["label"])}),
        "jobs": [], "outputs": [],
    }
    for prompt in ("sneaker", "a red fox"):
        reply = session.post(f"{base}/kiri/v1/jobs", timeout=REQUEST_TIMEOUT,
                             json={"recipe": "txt2img", "arguments": {"prompt": prompt, "steps": 2, "seed": 1}})
        reply.raise_for_status()
        snapshot = wait_for_job(session, base, reply.json()["id"])
        facts["jobs"].append(snapshot["id"])
        facts["outputs"] += snapshot["outputs"]
    return facts


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def job_cost(case):
    """Sampler steps × images × (pixels / 28²) of the job a request would run, as far as its body says; values
    the server refuses count as 1."""
    body = case.body if isinstance(case.body, dict) else {}
    path = case.operation.path
    if path == "/kiri/v1/jobs":
        arguments = body.get("arguments")
        if isinstance(arguments, list):
            arguments = dict(item.split("=", 1) for item in arguments if isinstance(item, str) and "=" in item)
        body = {}
        for key, value in (arguments if isinstance(arguments, dict) else {}).items():
            try:
                body[{"batch": "batch_size"}.get(key, key)] = float(value)
            except (TypeError, ValueError):
                pass
    elif path not in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
        return 0

    def field(key, low, high, default):
        value = number(body.get(key))
        return value if value is not None and low <= value <= high else default

    steps = field("steps", 1, 1000, 20)
    images = field("batch_size", 1, 64, 1) * field("n_iter", 1, 100, 1)
    pixels = max(field("width", 8, 4096, 28), 28) * max(field("height", 8, 4096, 28), 28)
    return steps * images * pixels / 784


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python schemathesis_check.py PORT [SCHEMA.json]")
    base = f"http://127.0.0.1:{int(sys.argv[1])}"
    started = time.monotonic()
    session = requests.Session()
    if len(sys.argv) == 3:
        with open(sys.argv[2]) as file:
            document = json.load(file)
        source = sys.argv[2]
    else:
        reply = session.get(f"{base}/openapi.json", timeout=REQUEST_TIMEOUT)
        reply.raise_for_status()
        document = reply.json()
        source = f"{base}/openapi.json"
    facts = server_facts(session, base)
    free_document, changes = test_copy(document, facts, steered=False)
    steered_document, steered_changes = test_copy(document, facts, steered=True)
    print(f"schemathesis {schemathesis.__version__}, hypothesis {hypothesis.__version__}: {source}")
    print("the test copy of the document (examples, positive and negative cases):")
    for change in changes:
        print("  " + change)
    print("the steered copy (steered cases) besides:")
    for change in steered_changes[len(changes):]:
        print("  " + change)

    free = schemathesis.openapi.from_dict(free_document)
    steered = schemathesis.openapi.from_dict(steered_document)
    for schema in (free, steered):
        schema.config.update(base_url=base)
    checks = [getattr(schemathesis.checks, name) for name in CHECK_NAMES]
    # Derandomized: the same requests every run. No shrinking: a failure is recorded, not raised.
    run_settings = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                            verbosity=Verbosity.quiet)

    failures = {}   # (operation, title) -> [count, report]
    total_cases = 0
    operations = []
    for result in free.get_all_operations():
        try:
            operation = result.ok()
        except Exception as error:   # an operation the document describes so that no request can be made
            failures[("the document", type(error).__name__)] = [1, str(error)]
            continue
        label = operation.label
        steered_operation = steered.find_operation_by_label(label)
        statuses = Counter()
        counts = Counter()

        def fail(title, report):
            failures.setdefault((label, title), [0, report])[0] += 1

        def send(case, kind):
            nonlocal total_cases
            if job_cost(case) > COST_BUDGET:
                counts["not sent (job too costly)"] += 1
                return
            if time.monotonic() - started > RUN_SECONDS:
                counts["not sent (past the run's limit)"] += 1
                fail(f"the run passed {RUN_SECONDS} s", "cases were left unsent")
                return
            counts[kind] += 1
            total_cases += 1
            try:
                response = case.call(session=session, timeout=REQUEST_TIMEOUT)
            except requests.RequestException as error:
                fail(type(error).__name__, f"{kind} case: {error}\n  request: {case.as_curl_command()}")
                statuses["no answer"] += 1
                return
            if label == "POST /kiri/v1/jobs" and response.status_code == 202:
                # One job at a time: the next request does not find this one queued (nor the queue full).
                job = response.json()
                snapshot = wait_for_job(session, base, job["id"])
                if snapshot is None or snapshot.get("error_kind") in ("time", "server"):
                    fail("the job did not end cleanly",
                         f"{kind} case: job {job['id']}: {snapshot}\n  request: {case.as_curl_command()}")
            try:
                case.validate_response(response, checks=checks, transport_kwargs={"session": session})
            except FailureGroup as group:
                lines = [f"{kind} case:"]
                for failure in group.exceptions:
                    message = "\n    ".join(line for line in failure.message.strip().splitlines() if line.strip())
                    lines.append(f"  {failure.title}: {message}")
                lines.append(f"  response: {response.status_code} {response.text[:600]}")
                lines.append(f"  request: {case.as_curl_command()}")
                fail("; ".join(sorted({failure.title for failure in group.exceptions})), "\n".join(lines))
                statuses[f"{response.status_code} failed"] += 1
                return
            statuses[str(response.status_code)] += 1

        # The document's own examples, then generated cases: positive and negative from the test copy, positive
        # from the steered copy.
        runs = [("example", 1, strategy) for strategy in free.get_strategies_from_examples(operation)]
        runs += [("positive", POSITIVE_CASES, operation.as_strategy(generation_mode=GenerationMode.POSITIVE)),
                 ("steered", STEERED_CASES, steered_operation.as_strategy(generation_mode=GenerationMode.POSITIVE)),
                 ("negative", NEGATIVE_CASES, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))]
        for kind, examples, strategy in runs:
            @settings(run_settings, max_examples=examples)
            @given(case=strategy)
            def run(case):
                send(case, kind)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass   # no case of this kind exists (a negative one for an operation without inputs)
        operations.append(label)
        shown_counts = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        shown_statuses = ", ".join(f"{status}×{count}" for status, count in sorted(statuses.items()))
        print(f"{label}: {shown_counts or 'no cases'} ({shown_statuses})")

    elapsed = time.monotonic() - started
    if failures:
        print(f"\nschemathesis: {len(failures)} distinct failures in {total_cases} cases over {len(operations)} "
              f"operations ({elapsed:.0f} s):")
        for (label, title), (count, report) in failures.items():
            print(f"\n=== {label}: {title} ({count} cases)\n{report}")
        raise SystemExit(1)
    print(f"({elapsed:.0f} s)")
    print(f"schemathesis: all checks passed ({total_cases} cases over {len(operations)} operations)")


if __name__ == "__main__":
    main()
