import { describeEngine, engineHost } from "./engine-suite.js";

const host = engineHost("FLOTILLA_TEST_DOCKER_HOST", "dockerd");
if (host) describeEngine("dockerd", host);
