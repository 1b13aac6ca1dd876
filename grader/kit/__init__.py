"""Host only. The student kit: where the checkout's reference lives, the handout, the kit notebook."""
