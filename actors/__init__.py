"""tickray.actors: the step protocol's actors, run in-process or as Ray actors."""
