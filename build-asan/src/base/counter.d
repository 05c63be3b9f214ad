build-asan/src/base/counter.o: src/base/counter.c src/base/counter.h
src/base/counter.h:
