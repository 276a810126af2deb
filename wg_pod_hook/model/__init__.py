"""Text in, typed values out, and the plan made of them: the wg-quick
config, the OCI state and annotations, the settings, the rule for trusting
a file, and the Plan with its nftables text.  Pure but for the few reads
at the edge (configfile, bundle, the settings' loader); nothing here
changes the system."""
