"""The commands, each one library call over the stages: analyze, plan, check, build, run."""
