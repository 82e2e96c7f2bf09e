"""Developer and operator tools around the deployables: the umbrella `rankserve` command,
the local stack, the Rank client, trace tools and warm-up files. Nothing under server/ imports
these."""
