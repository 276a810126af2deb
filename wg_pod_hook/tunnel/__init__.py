"""A tunnel's life: set up (lifecycle) and repaired, taken down (teardown),
read (status), its peers' host-name endpoints resolved and followed, and
the container's resolv.conf."""
