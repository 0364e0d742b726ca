import { describeEngine, engineHost } from "./engine-suite.js";

const host = engineHost("FLOTILLA_TEST_PODMAN_HOST", "podman");
if (host) describeEngine("podman", host);
