# shellcheck shell=sh
# Lets programs started from an SSH session open windows on the web desktop: DISPLAY=:1 xterm &
if [ -r /run/host-init/x11/Xauthority ]; then
    XAUTHORITY=/run/host-init/x11/Xauthority
    export XAUTHORITY
fi
