#!/bin/bash
# The entry point of quay's interop image (see Dockerfile): the runner's network setup, then
# wt-interop, which reads ROLE, TESTCASE, REQUESTS and PROTOCOLS from the environment.
set -e

# Routes through the network simulator (a script of the endpoint base image).
/setup.sh

if [ "$ROLE" == "client" ]; then
    # As the base image does: the client starts once the simulator is up.
    /wait-for-it.sh sim:57832 -s -t 30
fi

# The runner sets SSLKEYLOGFILE=/logs/keys.log; quay appends TLS secrets there.
mkdir -p /logs

exec wt-interop
