"""Client-side commands: `rankserve rank`, and the page formatting the demo shares."""
