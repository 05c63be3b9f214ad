build-asan/src/event/config.o: src/event/config.c src/event/config.h
src/event/config.h:
