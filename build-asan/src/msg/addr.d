build-asan/src/msg/addr.o: src/msg/addr.c src/msg/addr.h
src/msg/addr.h:
