#!/bin/sh
# One-shot (the `mqtt-auth` service): create the Mosquitto password file with the controller's
# and the health check's users if it does not exist yet. Lockers' entries are added later as
# they are registered; an existing file is never overwritten.
set -eu
file=/mosquitto/auth/passwd
if [ ! -s "$file" ]; then
  umask 077
  mosquitto_passwd -c -b "$file" controller "$LOCKERFLEET_MQTT_PASSWORD"
  mosquitto_passwd -b "$file" healthcheck "$MQTT_HEALTHCHECK_PASSWORD"
  echo "created $file"
fi
chown mosquitto:mosquitto "$file"
chmod 0600 "$file"
